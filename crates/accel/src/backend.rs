//! Which backend a task API runs on: a named one, or `auto`.

use std::fmt;

/// The backend a [`crate::MeterReader`] or [`crate::DefectInspector`] runs on.
///
/// `Auto` is the planner's choice: the backend measured fastest on this machine among those
/// that agree with the cpu reference (planned on first use and cached, see
/// [`crate::SessionBuilder::backend`]), falling back down the plan's ranking if it fails.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    #[default]
    Auto,
    /// A backend id as `accelbench devices` lists it: "cpu", "ort-openvino", "wgpu:0", ...
    Named(String),
}

impl Backend {
    /// The backend id a session is built with ("auto" for the planner).
    pub fn resolve(&self) -> &str {
        match self {
            Backend::Auto => "auto",
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
        assert_eq!(Backend::from("auto").resolve(), "auto");
        assert_eq!(
            Backend::from("ort-cpu"),
            Backend::Named("ort-cpu".to_string())
        );
        assert_eq!(Backend::from("ort-cpu".to_string()).resolve(), "ort-cpu");
        assert_eq!(Backend::Auto.to_string(), "auto");
    }
}
