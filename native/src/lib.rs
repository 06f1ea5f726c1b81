//! The screen's byte scan of an NDJSON block, in one pass.
//!
//! `cds_service/screening/prefilter.py` decides, from a line's bytes alone, whether the line names only
//! patients outside every trial's cohort, so that it need not be parsed. There the rules are regular
//! expressions, run as four passes over each block (about 3.5 ms a MiB, more than half of what orjson takes
//! to parse the same bytes). Here the same rules run in one pass, with SIMD substring search (memchr).
//! The rules are the Python ones, line for line; `tests/test_native_scan.py` holds the two to the same
//! answers on generated and hostile lines. Everything is safe Rust: the bytes are an export's, not ours.
//!
//! A line is *unsettled* (its bytes cannot say whose it is, so it is parsed) when it holds a `\u` or `\/`
//! escape, a backslash inside the id after a `Patient/`, or `"resourceType" : "Patient"`, `"Condition"` or
//! `"Medication"` anywhere (spacing around the colon as JSON allows; a contained resource counts too).
//! Otherwise its ids are the text after each `Patient/` up to the next `/`, `"`, `\` or the line's end.

use memchr::memmem::Finder;
use memchr::{memchr, memchr_iter};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PySet};

const PATIENT: &[u8] = b"Patient/";
const RESOURCE_TYPE: &[u8] = b"\"resourceType\"";
const ALWAYS_READ: [&[u8]; 3] = [b"\"Condition\"", b"\"Medication\"", b"\"Patient\""];

/// The substring finders, built once per call (a few hundred nanoseconds; a block is a MiB).
struct Finders {
    patient: Finder<'static>,
    resource_type: Finder<'static>,
    escape_u: Finder<'static>,
    escape_slash: Finder<'static>,
}

impl Finders {
    fn new() -> Self {
        Finders {
            patient: Finder::new(PATIENT),
            resource_type: Finder::new(RESOURCE_TYPE),
            escape_u: Finder::new(b"\\u"),
            escape_slash: Finder::new(b"\\/"),
        }
    }
}

/// JSON whitespace (the regular expression's `[ \t\r\n]`; a line holds no newline).
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn skip_space(line: &[u8], mut i: usize) -> usize {
    while i < line.len() && is_space(line[i]) {
        i += 1;
    }
    i
}

/// Whether `"resourceType"` followed by a colon and one of `quoted` (type names with their quotes) appears
/// anywhere in `text`. Each occurrence is tried, overlapping ones too (the key's closing quote can open
/// another): as a regular expression's search does.
fn names_a_type(text: &[u8], f: &Finders, quoted: &[&[u8]]) -> bool {
    let mut from = 0;
    while let Some(at) = f.resource_type.find(&text[from..]) {
        let key = from + at;
        let colon = skip_space(text, key + RESOURCE_TYPE.len());
        if colon < text.len() && text[colon] == b':' {
            let value = &text[skip_space(text, colon + 1)..];
            if quoted.iter().any(|name| value.starts_with(name)) {
                return true;
            }
        }
        from = key + 1;
    }
    false
}

/// What one line is: `None` when its bytes cannot say whose it is (parse it), else the (start, end) of the
/// id after each `Patient/`, in order (empty: it names nobody, and is parsed too).
fn line_ids(line: &[u8], f: &Finders) -> Option<Vec<(usize, usize)>> {
    let escaped = memchr(b'\\', line).is_some();
    if escaped && (f.escape_u.find(line).is_some() || f.escape_slash.find(line).is_some()) {
        return None;
    }
    let mut ids = Vec::new();
    for at in f.patient.find_iter(line) {
        let start = at + PATIENT.len();
        let len = line[start..]
            .iter()
            .position(|&b| matches!(b, b'/' | b'"' | b'\\'))
            .unwrap_or(line.len() - start);
        let end = start + len;
        if end < line.len() && line[end] == b'\\' {
            return None; // an escape inside an id: the bytes cannot say whose
        }
        ids.push((start, end));
    }
    if names_a_type(line, f, &ALWAYS_READ) {
        return None;
    }
    Some(ids)
}

/// The lines of `block` (whole lines, each ending in a newline) that must be read, and the runs of lines
/// that name only patients outside (none of their ids a key of `inside`), in order, as (start, end, what):
/// `what` an int n for a run of n lines naming only patients outside (end past its last newline; blank
/// lines within a run are not counted); None for a line to parse (end before its newline); or the set of
/// the ids a line names, one of them inside, for a line to route by them. Blank lines are passed over.
#[pyfunction]
fn scan<'py>(
    py: Python<'py>,
    block: &[u8],
    inside: &Bound<'py, PyDict>,
) -> PyResult<Bound<'py, PyList>> {
    let f = Finders::new();
    let out = PyList::empty(py);
    let mut run: Option<(usize, usize, usize)> = None; // (start, end, lines) of the outside lines so far
    let mut start = 0;
    for nl in memchr_iter(b'\n', block) {
        let line = &block[start..nl];
        let (from, to) = (start, nl);
        start = nl + 1;
        if line.is_empty() {
            continue;
        }
        // None: a line naming only patients outside, which joins the run; else what to say of the line
        let what: Option<Bound<'py, PyAny>> = match line_ids(line, &f) {
            Some(ids) if !ids.is_empty() => {
                let named: Vec<Bound<'py, PyBytes>> = ids
                    .iter()
                    .map(|&(a, b)| PyBytes::new(py, &line[a..b]))
                    .collect();
                let mut any_inside = false;
                for id in &named {
                    if inside.contains(id)? {
                        any_inside = true;
                        break;
                    }
                }
                if any_inside {
                    Some(PySet::new(py, &named)?.into_any())
                } else {
                    None
                }
            }
            _ => Some(py.None().into_bound(py)), // unsettled, or naming nobody: parsed
        };
        match what {
            None => {
                run = Some(match run {
                    Some((a, _, n)) => (a, to + 1, n + 1),
                    None => (from, to + 1, 1),
                })
            }
            Some(what) => {
                if let Some((a, b, n)) = run.take() {
                    out.append((a, b, n))?;
                }
                out.append((from, to, what))?;
            }
        }
    }
    if let Some((a, b, n)) = run {
        out.append((a, b, n))?;
    }
    Ok(out)
}

/// What a line the reader passes over uncounted is made of (what `bytes.strip()` empties, but the newline).
fn is_blank_byte(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | 0x0b | 0x0c)
}

/// The number of lines of `block` (whole lines, each ending in a newline) when none of them can be a
/// resource of a type in `read` (`prefilter.unread_only`), else 0: no `"resourceType" : "<a type read>"`
/// anywhere (JSON spacing, newlines included, around the colon), no `\u` escape that could hide one, and
/// no blank line (those are not counted).
#[pyfunction]
fn unread_only(block: &[u8], read: Vec<Bound<'_, PyBytes>>) -> usize {
    let f = Finders::new();
    let quoted: Vec<Vec<u8>> = read
        .iter()
        .map(|t| [b"\"", t.as_bytes(), b"\""].concat())
        .collect();
    let quoted: Vec<&[u8]> = quoted.iter().map(Vec::as_slice).collect();
    if names_a_type(block, &f, &quoted) {
        return 0;
    }
    if memchr(b'\\', block).is_some() && f.escape_u.find(block).is_some() {
        return 0;
    }
    let mut lines = 0;
    let mut start = 0;
    for nl in memchr_iter(b'\n', block) {
        if block[start..nl].iter().all(|&b| is_blank_byte(b)) {
            return 0;
        }
        lines += 1;
        start = nl + 1;
    }
    lines
}

#[pymodule]
fn trial_matcher_scan(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(scan, m)?)?;
    m.add_function(wrap_pyfunction!(unread_only, m)?)?;
    Ok(())
}
