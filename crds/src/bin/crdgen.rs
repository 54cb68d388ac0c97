//! Writes every file generated from the API types (CRD YAML, CRD reference) into the repository,
//! or with `--check` exits non-zero when a committed file differs.

use std::{path::Path, process::ExitCode};

fn main() -> ExitCode {
    let check = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("--check") => true,
        Some(_) => {
            eprintln!("usage: crdgen [--check]");
            return ExitCode::FAILURE;
        }
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let files = match portcullis_crds::generated_files() {
        Ok(files) => files,
        Err(error) => {
            eprintln!("cannot render the CRDs: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut failed = false;
    for (file, contents) in files {
        let path = root.join(&file);
        if check {
            if std::fs::read_to_string(&path).ok().as_deref() != Some(contents.as_str()) {
                eprintln!("{file} is out of date: run `cargo run -p portcullis-crds --bin crdgen`");
                failed = true;
            }
        } else if let Err(error) = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&path, &contents))
        {
            eprintln!("cannot write {file}: {error}");
            failed = true;
        } else {
            println!("wrote {file}");
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
