//! The release workflow (`.github/workflows/release.yaml`) cannot run here (it needs GitHub's
//! runners, a registry and Sigstore), so it is checked with actionlint: syntax, expressions,
//! contexts, job permissions and action inputs. The linter is shown to catch a broken copy,
//! so a clean result means something.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context as _, Result, ensure};
use portcullis_tests::tools::Tool;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_owned()
}

fn actionlint(files: &[&Path]) -> Result<Output> {
    Command::new(Tool::Actionlint.path()?)
        .args(["-no-color"])
        .args(files)
        .current_dir(repo())
        .output()
        .context("running actionlint")
}

fn workflows() -> Result<Vec<PathBuf>> {
    let dir = repo().join(".github/workflows");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    ensure!(!files.is_empty(), "no workflow in {}", dir.display());
    Ok(files)
}

#[test]
fn workflows_pass_actionlint() -> Result<()> {
    let files = workflows()?;
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let out = actionlint(&refs)?;
    ensure!(
        out.status.success(),
        "actionlint:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[test]
fn actionlint_catches_broken_workflows() -> Result<()> {
    let release = std::fs::read_to_string(repo().join(".github/workflows/release.yaml"))?;
    let scratch = portcullis_tests::fsutil::scratch_dir("release", "broken")?;
    let breakages = [
        (
            "an unknown context",
            "${{ github.ref }}",
            "${{ gitub.ref }}",
        ),
        ("a misspelt key", "runs-on:", "run-on:"),
        (
            "an unknown permission",
            "id-token: write",
            "id-tokens: write",
        ),
        ("a bad trigger", "push:", "pushed:"),
    ];
    for (what, from, to) in breakages {
        ensure!(
            release.contains(from),
            "release.yaml no longer has {from:?}"
        );
        let dir = scratch
            .join(what.replace(' ', "-"))
            .join(".github/workflows");
        std::fs::create_dir_all(&dir)?;
        let file = dir.join("release.yaml");
        std::fs::write(&file, release.replacen(from, to, 1))?;
        let out = actionlint(&[&file])?;
        ensure!(!out.status.success(), "actionlint accepted {what}");
    }
    std::fs::remove_dir_all(&scratch)?;
    Ok(())
}
