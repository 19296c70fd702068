//! The crate's structure, checked from its source: each top-level module (a room) may use
//! only rooms on its own line of the crate map in `src/lib.rs` or below it, and no rooms use
//! each other in a circle. So the map stays true, and arrows point down only.
//!
//! Rooms and their arrows are read from the text (`crate::room` paths, `use crate::{..}`
//! groups), not compiled: unit tests (`tests.rs`, `#[cfg(test)] mod ..`) and comments are
//! left out, as they are not part of the structure.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Arrows = BTreeMap<String, BTreeSet<String>>;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The rooms: `pub mod` lines of `lib.rs`.
fn rooms(lib: &str) -> BTreeSet<String> {
    lib.lines()
        .filter_map(|l| l.strip_prefix("pub mod ")?.strip_suffix(';'))
        .map(str::to_string)
        .collect()
}

/// Each room's line of the crate map (a `//! - ` item), from the bottom: where it is first
/// named as [`room`] or [`room::..`].
fn floors(lib: &str, rooms: &BTreeSet<String>) -> BTreeMap<String, usize> {
    let mut floors = BTreeMap::new();
    let mut item = 0;
    for line in lib.lines().filter_map(|l| l.strip_prefix("//!")) {
        if line.starts_with(" - ") {
            item += 1;
        }
        if item == 0 {
            continue;
        }
        for link in line.split("[`").skip(1) {
            let name = link.split(['`', ':']).next().unwrap_or_default();
            if rooms.contains(name) {
                floors.entry(name.to_string()).or_insert(item);
            }
        }
    }
    floors
}

/// The code of one file without its unit tests and comments.
fn code(text: &str) -> String {
    let mut kept = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let test_module = line.trim() == "#[cfg(test)]"
            && lines.peek().is_some_and(|next| next.trim_start().starts_with("mod ") && next.trim_end().ends_with('{'));
        if test_module {
            break;
        }
        kept.push_str(line.split("//").next().unwrap_or_default());
        kept.push('\n');
    }
    kept
}

/// The rooms `code` names: `crate::room..` and the first names of `use crate::{..}` groups.
fn named(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for after in code.split("crate::").skip(1) {
        if let Some(group) = after.strip_prefix('{') {
            let mut depth = 1;
            let mut start = true;
            let mut name = String::new();
            for c in group.chars() {
                if depth == 1 && start && (c.is_alphanumeric() || c == '_') {
                    name.push(c);
                    continue;
                }
                if !name.is_empty() {
                    names.insert(std::mem::take(&mut name));
                    start = false;
                }
                match c {
                    '{' => depth += 1,
                    '}' if depth == 1 => break,
                    '}' => depth -= 1,
                    ',' if depth == 1 => start = true,
                    _ => {}
                }
            }
            if !name.is_empty() {
                names.insert(name);
            }
        } else {
            let name: String = after.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            names.insert(name);
        }
    }
    names
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "tests") {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") && path.file_name().is_some_and(|n| n != "tests.rs") {
            out.push(path);
        }
    }
}

/// Room to rooms it uses, from every file under `src/` but `lib.rs` and `main.rs`.
fn arrows(src: &Path, rooms: &BTreeSet<String>) -> Arrows {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut arrows = Arrows::new();
    for file in files {
        let relative = file.strip_prefix(src).unwrap();
        let first = relative.components().next().unwrap().as_os_str().to_str().unwrap();
        let room = first.strip_suffix(".rs").unwrap_or(first);
        if !rooms.contains(room) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let to = arrows.entry(room.to_string()).or_default();
        to.extend(named(&code(&text)).into_iter().filter(|n| rooms.contains(n) && n != room));
    }
    arrows
}

/// A circle of rooms, if there is one.
fn circle(arrows: &Arrows) -> Option<Vec<String>> {
    fn visit<'a>(room: &'a str, arrows: &'a Arrows, path: &mut Vec<&'a str>, done: &mut BTreeSet<&'a str>) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|r| *r == room) {
            return Some(path[at..].iter().chain([&room]).map(|r| r.to_string()).collect());
        }
        if !done.insert(room) {
            return None;
        }
        path.push(room);
        for next in arrows.get(room).into_iter().flatten() {
            if let Some(found) = visit(next, arrows, path, done) {
                return Some(found);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    arrows.keys().find_map(|room| visit(room, arrows, &mut Vec::new(), &mut done))
}

#[test]
fn arrows_point_down_the_crate_map_and_make_no_circle() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let rooms = rooms(&lib);
    assert!(rooms.len() > 10, "rooms not found in lib.rs: {rooms:?}");
    let floors = floors(&lib, &rooms);
    let unmapped: Vec<_> = rooms.iter().filter(|r| !floors.contains_key(*r)).collect();
    assert!(unmapped.is_empty(), "rooms the crate map in src/lib.rs does not name: {unmapped:?}");

    let arrows = arrows(&src(), &rooms);
    assert!(arrows.values().map(BTreeSet::len).sum::<usize>() > 20, "too few arrows found: {arrows:?}");
    let up: Vec<String> = arrows
        .iter()
        .flat_map(|(from, to)| to.iter().map(move |to| (from, to)))
        .filter(|(from, to)| floors[*to] > floors[*from])
        .map(|(from, to)| format!("{from} -> {to}"))
        .collect();
    assert!(up.is_empty(), "arrows that run up the crate map of src/lib.rs: {up:?}");
    assert_eq!(circle(&arrows), None, "rooms that use each other in a circle");
}

#[test]
fn the_reading_finds_arrows_and_circles() {
    let text = "use crate::{datadir, http::{self, a}, listener};\nuse crate::model::X; // crate::cli\n\
                fn f() { crate::stop::x() }\n#[cfg(test)]\nmod tests {\n    use crate::server;\n}\n";
    let names = named(&code(text));
    assert_eq!(names, ["datadir", "http", "listener", "model", "stop"].map(String::from).into());

    let arrows = |pairs: &[(&str, &str)]| {
        let mut a = Arrows::new();
        for (from, to) in pairs {
            a.entry(from.to_string()).or_default().insert(to.to_string());
        }
        a
    };
    assert_eq!(circle(&arrows(&[("a", "b"), ("b", "c"), ("a", "c")])), None);
    let found = circle(&arrows(&[("a", "b"), ("b", "c"), ("c", "b")])).unwrap();
    assert_eq!(found, ["b", "c", "b"].map(String::from));
}
