//! Meter reading: the CRNN's per-step class probabilities, greedy CTC decoding, and
//! [`MeterReader`], which runs a batch of images through the model.

use super::{ImageLimits, ImageSource, TaskModel};
use crate::Backend;
use accel_core::{Error, Result};
use std::path::Path;

/// Digits 0-9 and the CTC blank, which Keras' CTC puts last.
const CLASSES: usize = 11;
const BLANK: usize = CLASSES - 1;

/// One symbol of a greedy CTC path: a run of time steps whose best class was `class`.
#[derive(Clone, Debug, PartialEq)]
pub struct CtcToken {
    pub class: usize,
    /// The highest probability of `class` over its run.
    pub confidence: f32,
    /// First and last time step of the run (inclusive).
    pub first_frame: usize,
    pub last_frame: usize,
}

/// Greedy (best path) CTC decoding of `probs`, `steps` rows of `classes` probabilities:
/// argmax per step, consecutive repeats collapse into one token, blanks are dropped (so a
/// doubled digit needs a blank between its two runs). Ties go to the lower class; NaN never wins.
pub fn ctc_greedy(
    probs: &[f32],
    steps: usize,
    classes: usize,
    blank: usize,
) -> Result<Vec<CtcToken>> {
    if classes == 0 || blank >= classes || steps.checked_mul(classes) != Some(probs.len()) {
        return Err(Error::Shape(format!(
            "ctc_greedy: {} probabilities for {steps} steps x {classes} classes (blank {blank})",
            probs.len()
        )));
    }
    let mut tokens: Vec<CtcToken> = Vec::new();
    let mut prev = None;
    for (t, row) in probs.chunks_exact(classes).enumerate() {
        let (best, p) = argmax(row);
        if prev == Some(best) {
            // Still in the same run; a blank run has no token to extend.
            if best != blank
                && let Some(last) = tokens.last_mut()
            {
                last.confidence = last.confidence.max(p);
                last.last_frame = t;
            }
        } else if best != blank {
            tokens.push(CtcToken {
                class: best,
                confidence: p,
                first_frame: t,
                last_frame: t,
            });
        }
        prev = Some(best);
    }
    Ok(tokens)
}

fn argmax(row: &[f32]) -> (usize, f32) {
    let mut best = (0, row[0]);
    for (i, &p) in row.iter().enumerate().skip(1) {
        if p > best.1 || (best.1.is_nan() && !p.is_nan()) {
            best = (i, p);
        }
    }
    best
}

/// One digit of a reading.
#[derive(Clone, Debug, PartialEq)]
pub struct DigitReading {
    pub digit: u8,
    /// The digit's highest probability over its frames.
    pub confidence: f32,
    /// First and last CRNN time step (of 87 across the 350-pixel width) of the digit.
    pub frames: (usize, usize),
}

/// A meter reading: the digits left to right with their confidences.
#[derive(Clone, Debug, PartialEq)]
pub struct MeterReading {
    /// Only ASCII digits; leading zeros kept ("004521").
    pub reading: String,
    /// The product of the digit confidences. When no digit was read, the mean blank
    /// probability over the time steps instead: how sure the model is that the crop holds no
    /// digits, which tells an empty crop (high) from an unreadable one (low).
    pub confidence: f32,
    pub digits: Vec<DigitReading>,
}

/// Decodes one image's CRNN output, `steps` x 11 probabilities (digits 0-9, blank last).
pub fn reading_from(probs: &[f32], steps: usize, classes: usize) -> Result<MeterReading> {
    if classes != CLASSES {
        return Err(Error::InvalidModel(format!(
            "a meter model outputs {CLASSES} classes per step (digits 0-9 and the CTC blank), \
             this one {classes}"
        )));
    }
    let tokens = ctc_greedy(probs, steps, classes, BLANK)?;
    let digits: Vec<DigitReading> = tokens
        .iter()
        .map(|t| DigitReading {
            // class < BLANK = 10, so it is a digit.
            digit: t.class as u8,
            confidence: t.confidence,
            frames: (t.first_frame, t.last_frame),
        })
        .collect();
    let reading = digits.iter().map(|d| char::from(b'0' + d.digit)).collect();
    let confidence = if digits.is_empty() {
        let blank_sum: f32 = probs.chunks_exact(classes).map(|r| r[BLANK]).sum();
        if steps == 0 {
            0.0
        } else {
            blank_sum / steps as f32
        }
    } else {
        digits.iter().map(|d| d.confidence).product()
    };
    Ok(MeterReading {
        reading,
        confidence,
        digits,
    })
}

/// Reads utility-meter digits with the CRNN (`models/crnn.onnx`, or another model with its
/// input and output: f32 `[N, H, W, 3]` in `[0, 1]`, probabilities `[N, T, 11]`).
///
/// ```no_run
/// use accel::{ImageSource, MeterReader};
/// let reader = MeterReader::new("auto")?.expected_digits(Some(6));
/// let path = std::path::Path::new("meter.jpg");
/// for r in reader.read(&[ImageSource::Path(path)])? {
///     match r {
///         Ok(m) => println!("{} ({:.2})", m.reading, m.confidence),
///         Err(e) => eprintln!("{e}"),
///     }
/// }
/// # Ok::<(), accel::Error>(())
/// ```
pub struct MeterReader {
    model: TaskModel,
    expected_digits: Option<usize>,
}

impl MeterReader {
    /// The shipped CRNN (`accel::shipped_model("crnn")`) on `backend` ("auto", "cpu", ...).
    pub fn new(backend: impl Into<Backend>) -> Result<Self> {
        let path = crate::shipped_model("crnn").ok_or_else(|| {
            Error::Other(
                "the shipped meter model crnn.onnx is not found; set ACCEL_MODELS_DIR or use \
                 MeterReader::from_model"
                    .into(),
            )
        })?;
        Self::from_model(path, backend)
    }

    /// A CRNN from an ONNX file, with the shipped model's input and output.
    pub fn from_model(path: impl AsRef<Path>, backend: impl Into<Backend>) -> Result<Self> {
        Ok(MeterReader {
            model: TaskModel::load(path.as_ref(), &backend.into())?,
            expected_digits: None,
        })
    }

    /// Worker threads; the backend's default otherwise.
    pub fn threads(mut self, threads: usize) -> Self {
        self.model.set_threads(threads);
        self
    }

    /// When set, a reading with another number of digits is an [`Error::DigitCount`].
    pub fn expected_digits(mut self, digits: Option<usize>) -> Self {
        self.expected_digits = digits;
        self
    }

    pub fn image_limits(mut self, limits: ImageLimits) -> Self {
        self.model.limits = limits;
        self
    }

    /// The backend id the model runs on (under `auto`, the plan's choice once it has run).
    pub fn backend(&self) -> String {
        self.model.backend()
    }

    pub fn model_path(&self) -> &Path {
        self.model.path()
    }

    /// Reads every image; all that decode go through the model in one batch. The outer error
    /// is the model's or backend's; each image has its own result (decoding, digit count).
    pub fn read(&self, images: &[ImageSource]) -> Result<Vec<Result<MeterReading>>> {
        let (prepared, out) = self.model.infer(images)?;
        let (steps, classes, probs) = match &out {
            None => (0, CLASSES, &[][..]),
            Some(t) => match t.shape() {
                [_, steps, classes] => (*steps, *classes, t.as_slice::<f32>()?),
                s => {
                    return Err(Error::InvalidModel(format!(
                        "{}: output shape {s:?}; a meter model outputs [N, steps, {CLASSES}]",
                        self.model.path().display()
                    )));
                }
            },
        };
        let mut rows = super::batch_rows(probs, steps * classes);
        Ok(prepared
            .into_iter()
            .map(|p| {
                let p = p?;
                let reading = reading_from(rows.next_row()?, steps, classes)?;
                match self.expected_digits {
                    Some(want) if reading.digits.len() != want => Err(Error::DigitCount {
                        source_name: p.name,
                        expected: want,
                        reading: reading.reading,
                    }),
                    _ => Ok(reading),
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One row per step: the named class gets `p`, the rest share 1 - p.
    fn probs(path: &[(usize, f32)]) -> Vec<f32> {
        let mut v = Vec::new();
        for &(class, p) in path {
            let rest = (1.0 - p) / (CLASSES - 1) as f32;
            v.extend((0..CLASSES).map(|c| if c == class { p } else { rest }));
        }
        v
    }

    fn classes(tokens: &[CtcToken]) -> Vec<usize> {
        tokens.iter().map(|t| t.class).collect()
    }

    #[test]
    fn repeats_collapse_and_keep_their_best_probability() {
        let p = probs(&[(4, 0.6), (4, 0.9), (4, 0.7), (5, 0.8)]);
        let t = ctc_greedy(&p, 4, CLASSES, BLANK).unwrap();
        assert_eq!(classes(&t), vec![4, 5]);
        assert_eq!(t[0].confidence, 0.9);
        assert_eq!((t[0].first_frame, t[0].last_frame), (0, 2));
        assert_eq!((t[1].first_frame, t[1].last_frame), (3, 3));
    }

    #[test]
    fn a_blank_separates_a_doubled_digit() {
        let b = BLANK;
        let with_blank = probs(&[(1, 0.9), (b, 0.9), (1, 0.8)]);
        let t = ctc_greedy(&with_blank, 3, CLASSES, b).unwrap();
        assert_eq!(classes(&t), vec![1, 1]);
        let without = probs(&[(1, 0.9), (1, 0.8)]);
        assert_eq!(
            classes(&ctc_greedy(&without, 2, CLASSES, b).unwrap()),
            vec![1]
        );
    }

    #[test]
    fn leading_and_trailing_blanks_are_dropped() {
        let b = BLANK;
        let p = probs(&[
            (b, 0.9),
            (b, 0.9),
            (0, 0.7),
            (b, 0.6),
            (0, 0.5),
            (9, 0.9),
            (b, 1.0),
        ]);
        let m = reading_from(&p, 7, CLASSES).unwrap();
        assert_eq!(m.reading, "009");
        assert_eq!(m.digits[2].frames, (5, 5));
        assert!((m.confidence - 0.7 * 0.5 * 0.9).abs() < 1e-6);
    }

    #[test]
    fn no_digits_reads_empty_with_mean_blank_probability() {
        let b = BLANK;
        let p = probs(&[(b, 0.9), (b, 0.7)]);
        let m = reading_from(&p, 2, CLASSES).unwrap();
        assert_eq!(m.reading, "");
        assert!((m.confidence - 0.8).abs() < 1e-6);
        assert!(m.digits.is_empty());
    }

    #[test]
    fn bad_shapes_are_errors() {
        assert!(ctc_greedy(&[0.5; 10], 1, 11, 10).is_err());
        assert!(ctc_greedy(&[0.5; 11], 1, 11, 11).is_err());
        assert!(ctc_greedy(&[], 0, 0, 0).is_err());
        assert!(ctc_greedy(&[], 0, 11, 10).unwrap().is_empty());
        assert!(reading_from(&[0.5; 12], 1, 12).is_err());
        let nan = [f32::NAN; 22];
        assert!(ctc_greedy(&nan, 2, 11, 10).is_ok());
    }
}
