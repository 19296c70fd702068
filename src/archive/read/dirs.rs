//! The folders of an extraction: the order of entry names that puts a folder's content
//! right after it, and the walk over it that makes each folder once and sets its mode last.

use std::fs;
use std::io;
use std::path::Path;

use super::check::Entries;
use crate::archive::ArchiveError;

/// The order of entry names in which a folder's content comes right after it: names compared
/// component by component, i.e. bytewise with '/' below every other byte. Equal names end
/// up side by side, and a folder's descendants form one run after it.
pub(super) fn name_order(a: &str, b: &str) -> std::cmp::Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    match a.iter().zip(b).position(|(x, y)| x != y) {
        None => a.len().cmp(&b.len()),
        Some(i) => {
            let rank = |byte: u8| if byte == b'/' { 0 } else { u16::from(byte) + 1 };
            rank(a[i]).cmp(&rank(b[i]))
        }
    }
}

/// Whether `name` lies inside the folder `folder`.
pub(super) fn is_inside(name: &str, folder: &str) -> bool {
    name.len() > folder.len() && name.as_bytes()[folder.len()] == b'/' && name.starts_with(folder)
}

/// Walks the folders of an extraction in name order (`order`, see [`name_order`]): `open`
/// for each folder the first time it is needed (parents first), `close` once nothing after
/// it in that order lies inside it (children first), with the mode its own entry records.
pub(super) fn walk_dirs(
    entries: &Entries,
    order: &[u32],
    mut open: impl FnMut(&str) -> Result<(), ArchiveError>,
    mut close: impl FnMut(&str, Option<u32>) -> Result<(), ArchiveError>,
) -> Result<(), ArchiveError> {
    let mut walk = DirWalk::default();
    for &position in order {
        let entry = &entries.list[position as usize];
        walk.visit(entries.name(entry), entry.is_dir, entry.mode(), &mut open, &mut close)?;
    }
    walk.finish(&mut close)
}

/// The folders open at a point of a walk in name order: one name's ancestors, so memory is
/// one name's depth whatever the number or depth of names, and each folder is opened once.
#[derive(Default)]
pub(super) struct DirWalk {
    /// The open folders: the length of each one's name (a prefix of `path`), and its mode.
    stack: Vec<(usize, Option<u32>)>,
    path: String,
}

impl DirWalk {
    /// The next entry in name order: closes the folders it lies outside of, opens those it
    /// needs (itself, or its parent).
    pub(super) fn visit(
        &mut self,
        name: &str,
        is_dir: bool,
        mode: Option<u32>,
        open: &mut impl FnMut(&str) -> Result<(), ArchiveError>,
        close: &mut impl FnMut(&str, Option<u32>) -> Result<(), ArchiveError>,
    ) -> Result<(), ArchiveError> {
        let (stack, path) = (&mut self.stack, &mut self.path);
        // The folder this entry needs: itself, or its parent ("" at the top).
        let folder = if is_dir { name } else { name.rsplit_once('/').map_or("", |(parent, _)| parent) };
        while let Some(&(len, mode)) = stack.last() {
            let prefix = &path[..len];
            if folder == prefix || is_inside(folder, prefix) {
                break;
            }
            close(prefix, mode)?;
            stack.pop();
        }
        let open_len = stack.last().map_or(0, |&(len, _)| len);
        path.clear();
        path.push_str(folder);
        if folder.len() > open_len {
            let from = if open_len == 0 { 0 } else { open_len + 1 };
            let ends = folder[from..].match_indices('/').map(|(i, _)| from + i).chain([folder.len()]);
            for end in ends {
                open(&folder[..end])?;
                stack.push((end, None));
            }
        }
        if is_dir {
            // Names are unique, so the folder was opened just now, by this entry.
            if let Some(top) = stack.last_mut() {
                top.1 = mode;
            }
        }
        Ok(())
    }

    /// Closes the folders still open, children first.
    pub(super) fn finish(
        mut self,
        close: &mut impl FnMut(&str, Option<u32>) -> Result<(), ArchiveError>,
    ) -> Result<(), ArchiveError> {
        while let Some((len, mode)) = self.stack.pop() {
            close(&self.path[..len], mode)?;
        }
        Ok(())
    }
}

/// Creates the folder `name` (relative, validated) under `dest`, whose parent exists.
pub(super) fn make_dir(dest: &Path, name: &str) -> Result<(), ArchiveError> {
    let path = dest.join(name);
    match fs::create_dir(&path) {
        Ok(()) => Ok(()),
        // Only possible if `dest` was not empty or someone races us: accept a real
        // directory, never a symlink.
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
            if fs::symlink_metadata(&path)?.is_dir() {
                Ok(())
            } else {
                Err(ArchiveError::UnsafePath { name: name.to_owned() })
            }
        }
        Err(err) => Err(err.into()),
    }
}
