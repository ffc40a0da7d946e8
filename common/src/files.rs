//! Noticing that files changed on disk (certificates, keys, policy files), by their modification
//! times and lengths. Reading and checking what is in them is the callers' business.

use std::path::Path;
use std::time::SystemTime;

/// What some files looked like: modification time and length of each (None: unreadable).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileStamp(Vec<Option<(SystemTime, u64)>>);

impl FileStamp {
    pub fn of<'a>(paths: impl IntoIterator<Item = &'a Path>) -> FileStamp {
        FileStamp(
            paths
                .into_iter()
                .map(|p| std::fs::metadata(p).ok().and_then(|m| Some((m.modified().ok()?, m.len()))))
                .collect(),
        )
    }
}
