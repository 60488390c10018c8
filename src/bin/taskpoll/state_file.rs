//! The file `wait --save-state` writes and `resume` reads: one [`WaitState`]
//! per line (JSON Lines), so a file of 100,000 waits is read line by line and
//! a bad line is named by its number.

use std::io::{BufRead, BufReader, Write as _};
use std::path::Path;

use taskpoll::{TaskRef, WaitState};

use super::error::Error;

/// Writes the states, replacing the file as a whole: they go to a temporary
/// file next to it, which is then renamed, so an interrupted write never
/// leaves half a file where a previous one was.
pub(crate) fn save(path: &Path, states: &[WaitState]) -> Result<(), Error> {
    let failed = |e: std::io::Error| Error::usage(format!("--save-state {}: {e}", path.display()));
    let mut text = String::new();
    for state in states {
        let line = serde_json::to_string(state)
            .map_err(|e| Error::usage(format!("--save-state: cannot encode a wait state: {e}")))?;
        text.push_str(&line);
        text.push('\n');
    }
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".partial");
    let temporary = std::path::PathBuf::from(temporary);
    let mut file = std::fs::File::create(&temporary).map_err(failed)?;
    file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(failed)?;
    drop(file);
    std::fs::rename(&temporary, path).map_err(failed)
}

/// Reads the states of a file (`-`: standard input). Blank lines are
/// skipped; every task reference is checked again as if it were typed, since
/// the file may have been edited.
pub(crate) fn load(path: &Path) -> Result<Vec<WaitState>, Error> {
    let source = path.display().to_string();
    if path.as_os_str() == "-" {
        return read(std::io::stdin().lock(), "standard input");
    }
    let file = std::fs::File::open(path).map_err(|e| Error::usage(format!("{source}: {e}")))?;
    read(BufReader::new(file), &source)
}

fn read(mut input: impl BufRead, source: &str) -> Result<Vec<WaitState>, Error> {
    let mut states = Vec::new();
    let mut line = Vec::new();
    for number in 1_u64.. {
        line.clear();
        let bad = |reason: String| Error::usage(format!("{source}, line {number}: {reason}"));
        if input.read_until(b'\n', &mut line).map_err(|e| bad(format!("cannot read: {e}")))? == 0 {
            break;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let mut state: WaitState =
            serde_json::from_slice(&line).map_err(|e| bad(format!("not a saved wait state ({e})")))?;
        state.task_ref = checked(&state.task_ref).map_err(|e| bad(e.to_string()))?;
        states.push(state);
    }
    Ok(states)
}

/// The reference rebuilt through the checks `TaskRef::new` and
/// `with_input` make (known provider, a sendable id, declared inputs).
fn checked(task_ref: &TaskRef) -> Result<TaskRef, Error> {
    let mut checked = TaskRef::new(task_ref.provider(), task_ref.id())?;
    for (name, value) in task_ref.inputs() {
        checked = checked.with_input(name, value.as_str())?;
    }
    Ok(checked)
}
