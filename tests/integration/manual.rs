//! The manual (README.md and the book in docs/) holds together: every link between its pages,
//! and every link into the repository, names a file that exists and, for a page, a heading it
//! has; the README stays short and leads to the Istio deployment in one click.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::support::{manual_files, repo};

/// A heading's anchor as mdBook and GitHub write it: lower case, letters, digits, `-` and `_`
/// kept, spaces turned into `-`, everything else dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(page: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(page).unwrap();
    let mut in_code = false;
    text.lines()
        .filter(|line| {
            if line.starts_with("```") {
                in_code = !in_code;
            }
            !in_code
        })
        .filter_map(|line| {
            line.trim_start_matches('#')
                .strip_prefix(' ')
                .filter(|_| line.starts_with('#'))
        })
        .map(anchor)
        .collect()
}

/// Every `[text](target)` of a page outside code blocks, with its line number.
fn links(page: &Path) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(page).unwrap();
    let link = regex::Regex::new(r"\]\(([^)\s]+)\)").unwrap();
    let mut in_code = false;
    let mut found = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        for target in link.captures_iter(line) {
            found.push((number + 1, target[1].to_owned()));
        }
    }
    found
}

#[test]
fn every_link_of_the_manual_leads_to_a_file_and_heading_that_exist() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in manual_files() {
        let dir = page.parent().unwrap().to_owned();
        for (line, target) in links(&page) {
            if target.starts_with("http://") || target.starts_with("https://") {
                continue;
            }
            checked += 1;
            let (path, fragment) = match target.split_once('#') {
                Some((path, fragment)) => (path, Some(fragment)),
                None => (target.as_str(), None),
            };
            let file: PathBuf = if path.is_empty() {
                page.clone()
            } else {
                dir.join(path)
            };
            let at = format!(
                "{}:{line}: {target}",
                page.strip_prefix(repo()).unwrap().display()
            );
            if !file.exists() {
                broken.push(format!("{at}: no such file"));
                continue;
            }
            if let Some(fragment) = fragment
                && !anchors(&file).contains(fragment)
            {
                broken.push(format!("{at}: no such heading"));
            }
        }
    }
    assert!(checked >= 40, "only {checked} links found");
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn the_readme_is_short_and_leads_to_the_istio_deployment_in_one_click() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let lines = readme.lines().count();
    assert!(lines <= 300, "README.md has {lines} lines");
    let istio = links(&repo().join("README.md"))
        .into_iter()
        .map(|(_, target)| target)
        .find(|target| target.ends_with("#deploying-on-istio"))
        .expect("a link from the README to the Istio deployment");
    let (page, fragment) = istio.split_once('#').unwrap();
    assert!(anchors(&repo().join(page)).contains(fragment), "{istio}");
}

#[test]
fn every_chapter_of_the_book_is_in_its_summary() {
    let listed: BTreeSet<PathBuf> = manual_files().into_iter().skip(1).collect();
    let on_disk: BTreeSet<PathBuf> = std::fs::read_dir(repo().join("docs/src"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md") && !p.ends_with("SUMMARY.md"))
        .collect();
    assert_eq!(listed, on_disk);
}
