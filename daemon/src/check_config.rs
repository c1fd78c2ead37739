//! `peerixd --check-config FILE`: every problem of a configuration file, not only the first.
//!
//! The loader stops at the first bad key (serde's `deny_unknown_fields`). Here each error's
//! line is reported and set aside (a bad table header with its whole table), and the file is
//! read again, until it parses; then the layered configuration is validated as the daemon
//! would, which names the key of a bad value.

use std::path::Path;

use crate::config::{self, DaemonConfig, FlagOverrides};

/// Bounds the passes over a file that is broken on many lines.
const MAX_PROBLEMS: usize = 100;

/// The problems of `file`, each naming the file, the line and the key; empty when it is good.
pub fn check(file: &Path, skip_system: bool) -> Vec<String> {
    let name = file.display();
    let mut text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => return vec![format!("{name}: {e}")],
    };
    let mut problems = Vec::new();
    while problems.len() < MAX_PROBLEMS {
        let err = match toml::from_str::<DaemonConfig>(&text) {
            Ok(_) => break,
            Err(e) => e,
        };
        let message = err.message().trim().to_string();
        let Some(span) = err.span() else {
            problems.push((usize::MAX, format!("{name}: {message}")));
            break;
        };
        let line_no = text[..span.start.min(text.len())].matches('\n').count();
        let key = key_at(&text, line_no).map_or(String::new(), |k| format!("{k}: "));
        problems.push((
            line_no + 1,
            format!("{name}:{}: {key}{message}", line_no + 1),
        ));
        if !set_aside(&mut text, line_no) {
            break;
        }
    }
    // In the file's order, not the order serde met them in.
    problems.sort_by_key(|(line, _)| *line);
    let mut problems: Vec<String> = problems.into_iter().map(|(_, p)| p).collect();
    if problems.is_empty() {
        // Values the types allow but the daemon does not (ranges, URLs, drivers...).
        if let Err(e) = config::load(Some(file), &FlagOverrides::default(), skip_system) {
            problems.push(format!("{name}: {e}"));
        }
    } else if let Ok(rest) = toml::from_str::<DaemonConfig>(&text) {
        // What is left after the bad lines were set aside may hold a bad value too.
        if let Err(e) = rest.validate() {
            problems.push(format!("{name}: {e}"));
        }
    }
    problems
}

/// The dotted key defined on line `n` (`ipc.max_frame`), from the table header above it.
fn key_at(text: &str, n: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let line = lines.get(n)?.trim();
    let table = |l: &str| l.trim_matches(|c| c == '[' || c == ']').trim().to_string();
    if line.starts_with('[') {
        return Some(table(line));
    }
    let key = line.split('=').next()?.trim();
    if key.is_empty() || key.starts_with('#') {
        return None;
    }
    let header = lines[..n]
        .iter()
        .rev()
        .map(|l| l.trim())
        .find(|l| l.starts_with('['))
        .map(table);
    Some(match header {
        Some(h) => format!("{h}.{key}"),
        None => key.to_string(),
    })
}

/// Comments out line `n`, and when it is a table header, the table's lines too. False when
/// there was nothing to comment out (the same error would come back).
fn set_aside(text: &mut String, n: usize) -> bool {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let Some(first) = lines.get(n) else {
        return false;
    };
    if first.trim_start().starts_with('#') || first.trim().is_empty() {
        return false;
    }
    let header = first.trim_start().starts_with('[');
    let mut i = n;
    while i < lines.len() {
        if i > n && (!header || lines[i].trim_start().starts_with('[')) {
            break;
        }
        lines[i] = format!("# {}", lines[i]);
        i += 1;
    }
    *text = lines.join("\n");
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_every_bad_key_with_its_line() {
        let d = tempfile::tempdir().expect("tempdir");
        let f = d.path().join("p.toml");
        std::fs::write(
            &f,
            "log = \"info\"\nbogus = 1\n[ipc]\nmax_frame = \"big\"\ninline_message_limt = 5\n\
             [nonsense]\nx = 1\n[webrtc]\nmdns = false\n",
        )
        .expect("write");
        let p = check(&f, true);
        assert_eq!(p.len(), 4, "{p:#?}");
        assert!(p[0].contains(":2:") && p[0].contains("bogus"), "{p:#?}");
        assert!(p[1].contains(":4:"), "{p:#?}");
        assert!(
            p[2].contains(":5:") && p[2].contains("inline_message_limt"),
            "{p:#?}"
        );
        assert!(p[3].contains(":6:") && p[3].contains("nonsense"), "{p:#?}");
    }

    #[test]
    fn a_good_file_has_no_problems_and_bad_values_are_named() {
        let d = tempfile::tempdir().expect("tempdir");
        let f = d.path().join("p.toml");
        std::fs::write(&f, "[webrtc]\nmdns = false\n").expect("write");
        assert!(check(&f, true).is_empty());
        std::fs::write(&f, "[webrtc]\nmax_message_size = 5\n").expect("write");
        let p = check(&f, true);
        assert!(
            p.len() == 1 && p[0].contains("webrtc.max_message_size"),
            "{p:#?}"
        );
    }
}
