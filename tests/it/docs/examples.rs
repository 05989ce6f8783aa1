//! The examples that people copy: every maps file in the docs (a ```maps
//! block) with the `| image | result |` tables after it, and the example maps
//! file shipped in the kustomize base, checked against the swap engine, so the
//! docs cannot drift from what ImageSwap does.

use std::path::{Path, PathBuf};

use imageswap::swap::Engine;

use crate::support::{read, repo_path};

/// Documents whose ```maps blocks and tables are checked.
const DOCS_WITH_EXAMPLES: &[&str] = &["docs/maps.md", "docs/migrating.md", "docs/quick-start.md"];

/// The maps file of `deploy/manifests` (the `imageswap-maps` ConfigMap).
const DEPLOY_MAPS: &str = "deploy/manifests/imageswap-maps.conf";

/// One table row: image, expected result (`None` = unchanged), optional rule word.
#[derive(Debug)]
struct Example {
    line: usize,
    image: String,
    result: Option<String>,
    rule: Option<String>,
}

/// A maps block and the example rows of the tables that follow it.
#[derive(Debug)]
struct MapsExample {
    line: usize,
    maps: String,
    rows: Vec<Example>,
}

fn cells(line: &str) -> Vec<String> {
    line.trim()
        .trim_start_matches('|')
        .trim_end_matches('|')
        .split('|')
        .map(|c| c.trim().to_owned())
        .collect()
}

fn code(cell: &str) -> Option<String> {
    let inner = cell.strip_prefix('`')?.strip_suffix('`')?;
    (!inner.contains('`')).then(|| inner.to_owned())
}

/// Reads the ```maps blocks of a Markdown document and the `| image | result
/// |` tables that follow each (up to the next block).
fn parse_examples(name: &str, text: &str) -> Vec<MapsExample> {
    let mut examples: Vec<MapsExample> = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((index, line)) = lines.next() {
        let line_no = index + 1;
        if line.trim() == "```maps" {
            let mut maps = String::new();
            loop {
                let (_, body) = lines
                    .next()
                    .unwrap_or_else(|| panic!("{name}:{line_no}: unterminated maps block"));
                if body.trim() == "```" {
                    break;
                }
                maps.push_str(body);
                maps.push('\n');
            }
            examples.push(MapsExample {
                line: line_no,
                maps,
                rows: Vec::new(),
            });
            continue;
        }
        let header = cells(line);
        if !(line.trim_start().starts_with('|')
            && header.len() >= 2
            && header[0] == "image"
            && header[1] == "result")
        {
            continue;
        }
        let rule_column = header.iter().position(|h| h == "rule");
        let current = examples
            .last_mut()
            .unwrap_or_else(|| panic!("{name}:{line_no}: an image/result table before any ```maps block"));
        lines.next(); // the |---| separator
        while let Some((row_index, row)) = lines.next_if(|(_, l)| l.trim_start().starts_with('|')) {
            let row_no = row_index + 1;
            let c = cells(row);
            let image =
                code(&c[0]).unwrap_or_else(|| panic!("{name}:{row_no}: the image must be in backticks"));
            let result = if c[1].starts_with("unchanged") {
                None
            } else {
                Some(
                    code(&c[1])
                        .unwrap_or_else(|| panic!("{name}:{row_no}: result must be `image` or unchanged")),
                )
            };
            let rule = rule_column.map(|i| c.get(i).cloned().unwrap_or_default());
            current.rows.push(Example {
                line: row_no,
                image,
                result,
                rule,
            });
        }
    }
    examples
}

#[test]
fn every_documented_swap_is_what_the_engine_does() {
    let mut checked = 0;
    let mut wrong = Vec::new();
    for doc in DOCS_WITH_EXAMPLES {
        let examples = parse_examples(doc, &read(doc));
        assert!(!examples.is_empty(), "{doc}: no ```maps examples found");
        for example in &examples {
            let (engine, findings) = Engine::from_maps_text(&example.maps);
            if let Some(error) = findings
                .iter()
                .find(|f| f.severity == imageswap::swap::Severity::Error)
            {
                wrong.push(format!(
                    "{doc}:{}: the maps block has an error: {}",
                    example.line, error.message
                ));
            }
            for row in &example.rows {
                let decision = engine.decide(&row.image);
                let rule = decision.rule.as_str();
                let result_ok = decision.result == row.result;
                let rule_ok = row.rule.as_deref().is_none_or(|r| r == rule);
                if !result_ok || !rule_ok {
                    wrong.push(format!(
                        "{doc}:{}: {} documented as {:?} by {:?}, the engine gives {:?} by {rule}",
                        row.line, row.image, row.result, row.rule, decision.result
                    ));
                }
                checked += 1;
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "documented examples differ from the engine:\n{}",
        wrong.join("\n")
    );
    assert!(
        checked >= 30,
        "only {checked} documented examples were found; did the table format change?"
    );
}

#[test]
fn the_parser_of_documented_examples_reads_tables_and_unchanged() {
    let doc = "x\n```maps\ndefault::a.io\ncool.io::\n```\n\n| image | result | rule |\n|---|---|---|\n\
               | `nginx` | `a.io/nginx` | default |\n| `cool.io/x` | unchanged | registry |\ntext\n";
    let examples = parse_examples("inline", doc);
    assert_eq!(examples.len(), 1);
    assert_eq!(examples[0].maps, "default::a.io\ncool.io::\n");
    let rows: Vec<_> = examples[0]
        .rows
        .iter()
        .map(|r| (r.image.as_str(), r.result.as_deref(), r.rule.as_deref()))
        .collect();
    assert_eq!(
        rows,
        [
            ("nginx", Some("a.io/nginx"), Some("default")),
            ("cool.io/x", None, Some("registry"))
        ]
    );
}

#[test]
fn the_shipped_maps_file_and_its_commented_examples_are_clean() {
    let text = read(DEPLOY_MAPS);
    let (engine, findings) = Engine::from_maps_text(&text);
    assert!(findings.is_empty(), "{DEPLOY_MAPS}: {findings:?}");
    // As shipped it swaps nothing (`default::`), so a namespace labelled
    // before the operator writes rules keeps its images (quick-start.md).
    for image in ["nginx:1.27", "quay.io/org/app:1", "registry.k8s.io/pause:3.10"] {
        let decision = engine.decide(image);
        assert_eq!(decision.result, None, "{DEPLOY_MAPS} changes {image}");
        assert_eq!(decision.rule, imageswap::swap::Rule::Default, "{image}");
    }

    // Every commented-out example rule, uncommented together, is a valid file
    // without warnings (a user enables them by removing the `#`).
    let uncommented: String = text
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase() || c == '[') => rest,
            _ => l,
        })
        .fold(String::new(), |acc, l| acc + l + "\n");
    let enabled = uncommented
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .count();
    assert!(
        enabled >= 8,
        "expected the example rules to be found, got {enabled}"
    );
    let (_, findings) = Engine::from_maps_text(&uncommented);
    assert!(
        findings.is_empty(),
        "{DEPLOY_MAPS} with its examples enabled: {findings:?}"
    );
}

/// The example maps file of the source tree (`--dev` serves it).
const EXAMPLE_MAPS: &str = "examples/imageswap-maps.conf";

/// Every `IMAGE -> RESULT` a comment of a maps file claims (in a sentence
/// or on a line of its own; RESULT `unchanged` for an image left alone),
/// with its line number.
fn comment_claims(text: &str) -> Vec<(usize, String, Option<String>)> {
    let trim = |word: &str| word.trim_matches(|c: char| "().,;:`".contains(c)).to_owned();
    let mut claims = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let Some(comment) = line.trim_start().strip_prefix('#') else {
            continue;
        };
        let words: Vec<&str> = comment.split_whitespace().collect();
        for (i, word) in words.iter().enumerate() {
            if *word != "->" || i == 0 || i + 1 == words.len() {
                continue;
            }
            let result = trim(words[i + 1]);
            let result = (result != "unchanged").then_some(result);
            claims.push((index + 1, trim(words[i - 1]), result));
        }
    }
    claims
}

/// The comments of the example maps file say what images become; each
/// claim is run through `imageswap swap` with that file, as a reader would.
#[test]
fn the_example_maps_files_comments_are_what_imageswap_swap_gives() {
    let text = read(EXAMPLE_MAPS);
    let claims = comment_claims(&text);
    assert!(
        claims.len() >= 12,
        "only {} claims found: {claims:?}",
        claims.len()
    );
    let output = crate::support::binary::command()
        .args(["swap", "--output", "json", "--maps"])
        .arg(repo_path(EXAMPLE_MAPS))
        .args(claims.iter().map(|(_, image, _)| image))
        .output()
        .expect("run imageswap swap");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answers: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    assert_eq!(answers.len(), claims.len());
    let wrong: Vec<String> = claims
        .iter()
        .zip(&answers)
        .filter(|((_, image, result), answer)| {
            answer["image"] != image.as_str()
                || answer["changed"] != result.is_some()
                || result.as_ref().is_some_and(|r| answer["result"] != r.as_str())
        })
        .map(|((line, image, result), answer)| {
            format!("{EXAMPLE_MAPS}:{line}: {image} -> {result:?}, imageswap swap gives {answer}")
        })
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn comment_claims_are_read_in_sentences_and_on_their_own_line() {
    let text = "# Docker Hub (nginx -> a.io/mirror-docker.io/nginx).\n#   b.io/x -> unchanged\nx::y -> z\n";
    assert_eq!(
        comment_claims(text),
        [
            (
                1,
                "nginx".to_owned(),
                Some("a.io/mirror-docker.io/nginx".to_owned())
            ),
            (2, "b.io/x".to_owned(), None),
        ]
    );
}

/// GitHub's anchor for a heading: lowercase, only letters, digits, `-` and
/// `_` kept, spaces turned into `-`.
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

/// The anchors of a Markdown document's headings (outside code blocks).
fn anchors(text: &str) -> Vec<String> {
    let mut in_code = false;
    let mut found = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            found.push(anchor(line.trim_start_matches('#')));
        }
    }
    found
}

/// The targets of `[text](target)` links outside code blocks.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut in_code = false;
    let mut found = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let mut rest = line;
        while let Some(start) = rest.find("](") {
            let after = &rest[start + 2..];
            let Some(end) = after.find(')') else { break };
            found.push((index + 1, after[..end].to_owned()));
            rest = &after[end..];
        }
    }
    found
}

#[test]
fn links_between_the_docs_resolve() {
    let mut documents = vec![PathBuf::from("README.md")];
    let docs_dir = repo_path("docs");
    let mut entries: Vec<_> = std::fs::read_dir(&docs_dir)
        .unwrap_or_else(|e| panic!("cannot list docs/: {e}"))
        .map(|entry| entry.expect("a docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    entries.sort();
    for path in entries {
        documents.push(Path::new("docs").join(path.file_name().expect("a file name")));
    }
    assert!(
        documents.len() >= 6,
        "expected README.md and the docs, found {documents:?}"
    );

    let mut broken = Vec::new();
    let mut checked = 0;
    for doc in &documents {
        let doc_name = doc.display().to_string();
        let text = read(&doc_name);
        for (line, target) in links(&text) {
            if target.starts_with("http://") || target.starts_with("https://") {
                continue;
            }
            let (file, fragment) = target.split_once('#').unwrap_or((&target, ""));
            let linked = if file.is_empty() {
                doc.clone()
            } else {
                doc.parent().unwrap_or(Path::new("")).join(file)
            };
            let linked_path = repo_path(&linked.display().to_string());
            checked += 1;
            if !linked_path.exists() {
                broken.push(format!("{doc_name}:{line}: {target}: no such file"));
                continue;
            }
            if !fragment.is_empty() {
                let linked_text = std::fs::read_to_string(&linked_path).unwrap_or_default();
                if !anchors(&linked_text).iter().any(|a| a == fragment) {
                    broken.push(format!(
                        "{doc_name}:{line}: {target}: no heading with that anchor"
                    ));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(checked >= 10, "only {checked} links found");
}

#[test]
fn anchors_follow_github() {
    assert_eq!(
        anchor(" The tools: `imageswap swap` and `imageswap maps check`"),
        "the-tools-imageswap-swap-and-imageswap-maps-check"
    );
    assert_eq!(anchor(" LEGACY mode (deprecated)"), "legacy-mode-deprecated");
}

/// The README's performance section is a summary of docs/performance.md:
/// short, and every figure of its table is one the full page gives (so the
/// two cannot drift apart when a run is published).
#[test]
fn the_readmes_performance_summary_quotes_docs_performance() {
    let readme = read("README.md");
    let full = read("docs/performance.md");
    let start = readme
        .find("\n## Performance\n")
        .expect("README has a Performance section");
    let section = &readme[start + 1..];
    let section = &section[..section[1..].find("\n## ").map_or(section.len(), |end| end + 1)];
    assert!(
        section.lines().count() <= 40,
        "the README's Performance section is {} lines: figures belong in docs/performance.md",
        section.lines().count()
    );
    assert!(
        section.contains("(docs/performance.md)"),
        "it links the full page"
    );
    let mut figures = 0;
    for row in section
        .lines()
        .filter(|l| l.starts_with('|') && !l.starts_with("|---"))
        .skip(1)
    {
        let cells = cells(row);
        for token in cells[1..].join(" ").split([' ', '(', ')', ';', '`']) {
            let token = token.trim_end_matches([',', '×']);
            let numeric = token.chars().all(|c| c.is_ascii_digit() || c == '.' || c == ',');
            if numeric && token.len() > 2 {
                assert!(
                    full.contains(token),
                    "README figure {token} ({row}) is not in docs/performance.md"
                );
                figures += 1;
            }
        }
    }
    assert!(figures >= 8, "only {figures} figures found in the README's table");
}
