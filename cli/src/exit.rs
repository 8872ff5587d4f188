//! How `como-saga` ends: its exit codes, the same for every command and documented in
//! `--help` (scripts and runbooks rely on them, so they do not change), and the one line an
//! error is printed as.

use std::process::ExitCode;

/// Done (`submit --wait`: the booking is confirmed).
pub const SUCCESS: u8 = 0;
/// The command failed: it could not do what was asked (the error is one line on standard
/// error), or the check it ran found a problem (`up --exit-when-done`, `bench`, `chaos`,
/// `schemas check`: their report says what).
pub const FAILED: u8 = 1;
/// Bad usage (clap answers a wrong flag with it), or a request refused before it was sent.
pub const USAGE: u8 = 2;
/// `submit --wait` gave up waiting; the saga goes on without the command.
pub const STILL_RUNNING: u8 = 3;
/// `submit`: the booking was not made: the saga was compensated or cancelled, or the request
/// id is already used by another booking.
pub const NOT_BOOKED: u8 = 4;
/// `submit --wait`: the saga stopped for an operator.
pub const NEEDS_OPERATOR: u8 = 5;

/// `como-saga --help`'s account of the exit codes.
pub const HELP: &str = "\
Exit codes (the same for every command):
  0  done (submit --wait: the booking is confirmed)
  1  the command failed: the error is one line on standard error; or the check it ran
     found a problem (up --exit-when-done, bench, chaos, schemas check: the report says what)
  2  bad usage, or a request refused before it was sent (submit names the field)
  3  submit --wait gave up waiting; the saga goes on
  4  submit: the booking was not made: the saga was compensated or cancelled, or the
     request id is already used by another booking (REQUEST_ID_REUSED)
  5  submit --wait: the saga stopped for an operator (the reason is printed)

--json prints JSON only on standard output; progress and logs go to standard error.";

pub fn code(code: u8) -> ExitCode {
    ExitCode::from(code)
}

/// An error as the one line `main` prints: its causes joined by ": ", each said once. A cause
/// whose text its parents already said is left out: many errors repeat their source in their
/// own message (`cannot create the directory d: File exists` whose source is `File exists`),
/// and a chain of them would otherwise say the same thing two or three times.
pub fn error_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        let text = text.trim();
        if text.is_empty() || line.contains(text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(text);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error whose message repeats its source's, as `thiserror`'s `{source}` does.
    #[derive(Debug)]
    struct Repeats(std::io::Error);

    impl std::fmt::Display for Repeats {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "cannot create the directory d: {}", self.0)
        }
    }

    impl std::error::Error for Repeats {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_cause_already_said_is_left_out() {
        let io = std::io::Error::other("File exists (os error 17)");
        let err = anyhow::Error::new(Repeats(io)).context("cannot open the database d/x.sqlite");
        assert_eq!(
            error_line(&err),
            "cannot open the database d/x.sqlite: cannot create the directory d: File exists (os error 17)"
        );
        // What `{:#}` printed before: the source twice.
        assert_eq!(
            format!("{err:#}"),
            "cannot open the database d/x.sqlite: cannot create the directory d: File exists (os error 17): File exists (os error 17)"
        );
    }

    #[test]
    fn causes_that_add_something_are_kept_in_order() {
        let err = anyhow::anyhow!("connection refused")
            .context("cannot reach the API")
            .context("sagas list");
        assert_eq!(
            error_line(&err),
            "sagas list: cannot reach the API: connection refused"
        );
        assert_eq!(error_line(&anyhow::anyhow!("alone")), "alone");
        // An empty cause adds no separator.
        assert_eq!(error_line(&anyhow::anyhow!("").context("outer")), "outer");
    }

    #[test]
    fn the_help_names_every_code() {
        for (code, what) in [
            (SUCCESS, "done"),
            (FAILED, "the command failed"),
            (USAGE, "bad usage"),
            (STILL_RUNNING, "gave up waiting"),
            (NOT_BOOKED, "the booking was not made"),
            (NEEDS_OPERATOR, "stopped for an operator"),
        ] {
            let line = HELP
                .lines()
                .find(|l| l.trim_start().starts_with(&format!("{code}  ")))
                .unwrap_or_else(|| panic!("code {code} is not in the help"));
            assert!(line.contains(what), "{line:?} should say {what:?}");
        }
    }
}
