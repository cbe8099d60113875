//! The workspace's `rust-version` is the real minimum: at least 1.88 (let-chains) and at
//! least the highest `rust-version` any locked dependency declares, read from `Cargo.lock`
//! through `cargo metadata`. Older toolchains cannot be installed here, so this is how a
//! wrong minimum is caught: the test fails and names the dependency that needs more.
//!
//! Run: `cargo test -p wsgate-tests --test rust_version`.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, ensure};
use serde_json::Value;

/// What the workspace's own code needs: let-chains are stable from 1.88.
const LANGUAGE_MINIMUM: (u64, u64, u64) = (1, 88, 0);

/// A version triple as Cargo writes it.
fn shown((major, minor, patch): (u64, u64, u64)) -> String {
    format!("{major}.{minor}.{patch}")
}

/// `1.89` or `1.89.0` as a comparable triple.
fn version(text: &str) -> Option<(u64, u64, u64)> {
    let mut parts = text.trim().split('.').map(str::parse::<u64>);
    let major = parts.next()?.ok()?;
    let minor = parts.next().unwrap_or(Ok(0)).ok()?;
    let patch = parts.next().unwrap_or(Ok(0)).ok()?;
    Some((major, minor, patch))
}

/// The workspace's `rust-version` equals the highest of [`LANGUAGE_MINIMUM`] and every locked
/// dependency's `rust-version`.
#[test]
fn rust_version_is_the_highest_minimum_of_the_locked_dependencies() -> Result<()> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .arg("--manifest-path")
        .arg(&manifest)
        .output()
        .context("running cargo metadata")?;
    ensure!(
        output.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout)?;
    let packages = metadata["packages"]
        .as_array()
        .context("no packages in cargo metadata")?;

    let mut needed = (
        LANGUAGE_MINIMUM,
        "let-chains in the workspace's code".to_owned(),
    );
    let mut declared = Vec::new();
    for package in packages {
        let name = package["name"].as_str().unwrap_or("?");
        let Some(rust_version) = package["rust_version"].as_str() else {
            continue;
        };
        let parsed = version(rust_version)
            .with_context(|| format!("{name}: rust-version {rust_version:?}"))?;
        if package["source"].is_null() {
            // A workspace member: they all inherit the workspace's rust-version.
            declared.push((name.to_owned(), parsed));
        } else if parsed > needed.0 {
            needed = (parsed, format!("{name} {}", package["version"]));
        }
    }
    ensure!(
        !declared.is_empty(),
        "no workspace member declares rust-version"
    );
    let (minimum, because) = needed;
    for (member, rust_version) in declared {
        ensure!(
            rust_version == minimum,
            "{member} declares rust-version {}, but the real minimum is {} (because of \
             {because}): set `rust-version` in Cargo.toml's [workspace.package] to it",
            shown(rust_version),
            shown(minimum)
        );
    }
    Ok(())
}

/// Versions compare as numbers, and a missing patch is 0.
#[test]
fn versions_compare_as_numbers() {
    assert_eq!(version("1.89"), Some((1, 89, 0)));
    assert!(version("1.100.0") > version("1.89.1"));
    assert_eq!(version("x"), None);
}
