//! `imageswap serve --dev`: what a person needs to try the server on a
//! laptop. The example files are read from the source tree when the binary
//! runs from it (so edits to them show), else written from the copies built
//! into the binary.

use std::net::SocketAddr;
use std::path::PathBuf;

const EXAMPLE_MAPS: &str = include_str!("../../examples/imageswap-maps.conf");
const EXAMPLE_REVIEW: &str = include_str!("../../examples/admission-review.json");

/// The example maps file: the source tree's, else a temporary copy.
pub fn example_maps_file() -> std::io::Result<PathBuf> {
    example_file("imageswap-maps.conf", EXAMPLE_MAPS)
}

/// The example review: the source tree's, else a temporary copy.
pub fn example_review_file() -> std::io::Result<PathBuf> {
    example_file("admission-review.json", EXAMPLE_REVIEW)
}

fn example_file(name: &str, embedded: &str) -> std::io::Result<PathBuf> {
    let in_tree = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name);
    if in_tree.is_file() {
        return Ok(in_tree);
    }
    let copy = std::env::temp_dir().join(format!("imageswap-dev-{name}"));
    std::fs::write(&copy, embedded)?;
    Ok(copy)
}

/// The lines `--dev` prints: where the server is, and a command that posts
/// the example review and decodes the patch (needs only curl, sed and base64).
pub fn try_it(addr: SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        addr.ip().to_string()
    };
    let url = format!("{scheme}://{host}:{}/mutate", addr.port());
    let review = match example_review_file() {
        Ok(path) => path.display().to_string(),
        Err(_) => "examples/admission-review.json".to_owned(),
    };
    let insecure = if tls { " -k" } else { "" };
    format!(
        "ImageSwap dev server on {url} ({}).\n\
         Post the example review and decode the patch:\n\n  \
         curl -s{insecure} {url} -H 'Content-Type: application/json' --data-binary @{review} \
         | sed -E 's/.*\"patch\":\"([^\"]*)\".*/\\1/' | base64 -d; echo\n",
        if tls {
            "self-signed certificate for localhost and 127.0.0.1"
        } else {
            "plain HTTP"
        }
    )
}
