//! Writes the CRD YAML generated from the Rust types into every directory given (default
//! `crds/yaml`), or with `--check` exits non-zero when a committed file differs.

use std::{path::PathBuf, process::ExitCode};

fn main() -> ExitCode {
    let mut check = false;
    let mut dirs = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--check" => check = true,
            "-h" | "--help" => {
                println!("usage: crdgen [--check] [DIR ...]   (default DIR: crds/yaml)");
                return ExitCode::SUCCESS;
            }
            other => dirs.push(PathBuf::from(other)),
        }
    }
    if dirs.is_empty() {
        dirs.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("yaml"));
    }
    let mut failed = false;
    for (file, crd) in portcullis_crds::crds() {
        let yaml = match portcullis_crds::render_yaml(&crd) {
            Ok(yaml) => yaml,
            Err(error) => {
                eprintln!("cannot render {file}: {error}");
                return ExitCode::FAILURE;
            }
        };
        for dir in &dirs {
            let path = dir.join(file);
            if check {
                let committed = std::fs::read_to_string(&path).unwrap_or_default();
                if committed != yaml {
                    eprintln!("{} is out of date: run `cargo run -p portcullis-crds --bin crdgen`", path.display());
                    failed = true;
                }
            } else if let Err(error) =
                std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, &yaml))
            {
                eprintln!("cannot write {}: {error}", path.display());
                failed = true;
            } else {
                println!("wrote {}", path.display());
            }
        }
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
