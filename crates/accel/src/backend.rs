//! Which backend a task API runs on: a named one, or `auto`.

use std::fmt;

/// The backend a [`crate::MeterReader`] or [`crate::DefectInspector`] runs on.
///
/// `Auto` resolves to `cpu` today: it is always available and gives the reference answers.
/// This is a placeholder, not a measurement: issue #7's planner replaces it with the backend
/// measured fastest on this machine among those that give the right answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    #[default]
    Auto,
    /// A backend id as `accelbench devices` lists it: "cpu", "ort-openvino", "wgpu:0", ...
    Named(String),
}

impl Backend {
    /// The backend id this choice runs on now.
    pub fn resolve(&self) -> &str {
        match self {
            // Until the planner (issue #7) exists, auto is the always-available CPU backend.
            Backend::Auto => "cpu",
            Backend::Named(id) => id,
        }
    }
}

impl From<&str> for Backend {
    fn from(s: &str) -> Self {
        if s == "auto" {
            Backend::Auto
        } else {
            Backend::Named(s.to_string())
        }
    }
}

impl From<String> for Backend {
    fn from(s: String) -> Self {
        Backend::from(s.as_str())
    }
}

impl From<&String> for Backend {
    fn from(s: &String) -> Self {
        Backend::from(s.as_str())
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backend::Auto => f.write_str("auto"),
            Backend::Named(id) => f.write_str(id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_and_named() {
        assert_eq!(Backend::from("auto"), Backend::Auto);
        assert_eq!(Backend::from("auto").resolve(), "cpu");
        assert_eq!(
            Backend::from("ort-cpu"),
            Backend::Named("ort-cpu".to_string())
        );
        assert_eq!(Backend::from("ort-cpu".to_string()).resolve(), "ort-cpu");
        assert_eq!(Backend::Auto.to_string(), "auto");
    }
}
