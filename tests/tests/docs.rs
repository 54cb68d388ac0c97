//! Every command the docs show is run: the shell code blocks (```` ```sh ````, ```` ```bash ````,
//! ```` ```console ````) of `README.md`, `docs/*.md` and `docs/ingress/*.md` are extracted, and
//! each command in them must be accounted for in exactly one way:
//!
//! 1. run here, for real, against the shared test cluster with the real `kubectl`, `helm`,
//!    `openssl`, `certutil`, `npm` and `devstack` (placeholders such as `NAME` and `SUBJECT`
//!    replaced by objects this test creates; the release and namespace `portcullis` by a
//!    namespace of this test's own), with the command's effect checked through the API;
//! 2. run by another test named in [`ELSEWHERE`], whose claim is checked here against that
//!    test's source (so a renamed or rewritten test breaks the claim loudly);
//! 3. not runnable here, with the reason, in [`NOT_HERE`].
//!
//! A command in none of them fails the test, so a new docs command cannot slip in untested; a
//! table entry that no longer matches a command fails it too.
//!
//! The commands are taken from the docs text at run time, never copied into this file: editing
//! a command in the docs changes what runs here. They run in a scratch directory that looks like
//! a checkout (symlinks to the repository's top-level entries, its own `target/`), so files the
//! commands write (keys, values files, an NSS database under a private `HOME`) stay out of the
//! repository.
//!
//! The install page's commands delete the Portcullis CRDs at the end (uninstall), which every
//! other test relies on: that is the last step, the CRDs are reinstalled right after, and this
//! binary has a single cluster test so nothing else in it runs meanwhile (test binaries run one
//! after another).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams};
use portcullis_crds::{AccessPolicy, AccessSession};
use portcullis_tests::TestCluster;
use portcullis_tests::cluster::install_crds;
use portcullis_tests::tools::Tool;

/// A command run by another test: (docs file, start of the command, the test, what in the test
/// (and in files it relies on) shows it, why it is not run here).
struct Elsewhere {
    file: &'static str,
    command: &'static str,
    test: &'static str,
    evidence: &'static [(&'static str, &'static str)],
    why: &'static str,
}

const ELSEWHERE: &[Elsewhere] = &[
    Elsewhere {
        file: "docs/install.md",
        command: "hack/build-images.sh",
        test: "tests/tests/images.rs",
        evidence: &[
            (
                "tests/tests/images.rs",
                r#"Command::new(repo().join("hack/build-images.sh"))"#,
            ),
            ("hack/test.sh", "hack/build-images.sh"),
        ],
        why: "images.rs runs it twice into two folders and checks the images; hack/test.sh runs \
              it for the in-cluster test",
    },
    Elsewhere {
        file: "docs/install.md",
        command: "ctr -n k8s.io images import ",
        test: "tests/tests/incluster.rs",
        evidence: &[
            ("tests/tests/incluster.rs", "TestNode::shared().await"),
            ("tests/src/node/images.rs", r#""k8s.io","#),
            ("tests/src/node/images.rs", r#""import","#),
        ],
        why: "the test node imports every archive of target/images with ctr (into its own \
              containerd, whose socket it names)",
    },
    Elsewhere {
        file: "README.md",
        command: "hack/demo.sh ",
        test: "tests/tests/demo.rs",
        evidence: &[
            (
                "hack/demo.sh",
                r#"exec target/debug/devstack up --state-dir "${PORTCULLIS_DEMO_DIR:-$PWD/target/demo}" --demo "$@""#,
            ),
            ("tests/tests/demo.rs", r#".arg("--demo")"#),
        ],
        why: "the demo runs in the foreground until Ctrl-C; demo.rs runs the `devstack up --demo` \
              the script ends in (after building the tools and binaries, which hack/test.sh does), \
              walks the seed story and stops it with SIGTERM",
    },
    Elsewhere {
        file: "docs/quickstart.md",
        command: "hack/demo.sh\n",
        test: "tests/tests/demo.rs",
        evidence: &[
            (
                "hack/demo.sh",
                r#"exec target/debug/devstack up --state-dir "${PORTCULLIS_DEMO_DIR:-$PWD/target/demo}" --demo "$@""#,
            ),
            ("tests/tests/demo.rs", r#".arg("--demo")"#),
        ],
        why: "as in the README",
    },
    Elsewhere {
        file: "docs/quickstart.md",
        command: "hack/demo.sh --demo-token-lifetime 10s --demo-idle-timeout 1m",
        test: "tests/tests/browser.rs",
        evidence: &[
            ("tests/tests/browser.rs", r#".arg("--demo-token-lifetime")"#),
            ("tests/tests/browser.rs", r#"TOKEN_LIFETIME: &str = "10s""#),
            ("tests/tests/browser.rs", r#".arg("--demo-idle-timeout")"#),
            ("tests/tests/browser.rs", r#"IDLE_TIMEOUT: &str = "1m""#),
        ],
        why: "browser.rs starts the demo with exactly these lifetimes",
    },
    Elsewhere {
        file: "docs/quickstart.md",
        command: "cargo test -p portcullis-tests --test browser",
        test: "tests/tests/browser.rs",
        evidence: &[
            (
                "tests/tests/browser.rs",
                "async fn seed_story_in_chromium()",
            ),
            ("hack/test.sh", "cargo test --workspace"),
        ],
        why: "the command is that test; hack/test.sh runs it with the workspace",
    },
    Elsewhere {
        file: "docs/quickstart.md",
        command: "PORTCULLIS_E2E_KUBECTL=~/.cache/portcullis-tools/bin/kubectl node e2e/seed-story.mjs",
        test: "tests/tests/browser.rs",
        evidence: &[
            ("tests/tests/browser.rs", "browser.run(&env, &artifacts)"),
            (
                "tests/src/e2e.rs",
                r#".arg(e2e_dir().join("seed-story.mjs"))"#,
            ),
            (
                "tests/src/e2e.rs",
                r#".env("PORTCULLIS_E2E_KUBECTL", &self.kubectl)"#,
            ),
        ],
        why: "needs a running demo and Chromium; browser.rs runs the script against its own demo \
              (with the demo's URLs set explicitly rather than from `devstack env`, which this \
              test runs)",
    },
    Elsewhere {
        file: "docs/cli.md",
        command: "kubectl portcullis revoke session NAME --wait",
        test: "cli/tests/wait.rs",
        evidence: &[(
            "cli/tests/wait.rs",
            r#"&["revoke", "session", "s1", "--wait"]"#,
        )],
        why: "--wait needs the operator and a gateway in cluster mode, which wait.rs runs; it \
              runs the command in this form against them",
    },
    Elsewhere {
        file: "docs/cli.md",
        command: "kubectl portcullis revoke user --email alice@example.com --wait=2m",
        test: "cli/tests/wait.rs",
        evidence: &[(
            "cli/tests/wait.rs",
            r#"&["revoke", "user", "--email", "ursula@example.com", "--wait=2m"]"#,
        )],
        why: "as above",
    },
    Elsewhere {
        file: "docs/cli.md",
        command: "kubectl portcullis revoke policy NAME -n NAMESPACE --wait",
        test: "cli/tests/wait.rs",
        evidence: &[(
            "cli/tests/wait.rs",
            r#"&["revoke", "policy", "apps", "-n", &ns, "--wait"]"#,
        )],
        why: "as above",
    },
];

/// Commands not runnable by any test: (docs file, start of the command, reason).
const NOT_HERE: &[(&str, &str, &str)] = &[
    (
        "docs/install.md",
        "mkdir -p oci/gateway",
        "it prepares the push below it; there is no registry here (tests/tests/images.rs checks \
         the archive's layout, release.yaml does the push)",
    ),
    (
        "docs/install.md",
        "crane push ",
        "there is no registry here; the release workflow pushes (checked by tests/tests/release.rs)",
    ),
    (
        "docs/install.md",
        "docker buildx build ",
        "no Docker daemon runs here; tests/tests/images.rs checks the Dockerfile's stages against \
         the images hack/build-images.sh writes",
    ),
    (
        "README.md",
        "hack/test.sh ",
        "it runs every test, this one included (.ci/run runs it)",
    ),
    (
        "docs/cli.md",
        "cargo install --path cli --locked",
        "it compiles the workspace's kubectl-portcullis again and writes into ~/.cargo/bin; the \
         tests run the same binary as built by cargo (on PATH here, for kubectl to discover)",
    ),
];

/// The Portcullis CRDs, as the install page names them.
const CRDS: [&str; 3] = [
    "accesspolicies.access.portcullis.dev",
    "accesssessions.access.portcullis.dev",
    "accesshosts.access.portcullis.dev",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or_else(|| Path::new(".."))
        .to_owned()
}

/// One command of a shell code block: a line, with its `\` continuations, or a whole
/// `for`/`while`/`if` compound up to its `done`/`fi`.
#[derive(Debug, Clone, PartialEq)]
struct DocCommand {
    file: String,
    line: usize,
    text: String,
}

/// The commands of every shell code block in `text`.
fn extract(file: &str, text: &str) -> Vec<DocCommand> {
    let mut out = Vec::new();
    let mut block: Option<bool> = None; // Some(console?) inside a shell block
    let mut in_other_block = false;
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let fence = line.trim_start().strip_prefix("```");
        if let Some(info) = fence {
            if block.is_some() || in_other_block {
                block = None;
                in_other_block = false;
            } else {
                match info.trim() {
                    "sh" | "bash" | "shell" => block = Some(false),
                    "console" => block = Some(true),
                    _ => in_other_block = true,
                }
            }
            i += 1;
            continue;
        }
        let Some(console) = block else {
            i += 1;
            continue;
        };
        let start = i;
        let first = if console {
            match line.trim_start().strip_prefix("$ ") {
                Some(command) => command,
                None => {
                    i += 1;
                    continue;
                }
            }
        } else {
            line
        };
        if first.trim().is_empty() || first.trim_start().starts_with('#') {
            i += 1;
            continue;
        }
        let mut command = vec![first.trim_end().to_owned()];
        let compound_end = match first.split_whitespace().next() {
            Some("for" | "while" | "until") => Some("done"),
            Some("if") => Some("fi"),
            Some("case") => Some("esac"),
            _ => None,
        };
        i += 1;
        while i < lines.len() {
            let last = command.last().map(String::as_str).unwrap_or_default();
            let open = last.ends_with('\\')
                || compound_end.is_some_and(|end| {
                    command.len() == 1 || last.split_whitespace().next() != Some(end)
                });
            if !open || lines[i].trim_start().starts_with("```") {
                break;
            }
            command.push(lines[i].trim_end().to_owned());
            i += 1;
        }
        out.push(DocCommand {
            file: file.to_owned(),
            line: start + 1,
            text: command.join("\n"),
        });
    }
    out
}

/// The docs this test covers, relative to the repository.
fn doc_files() -> Result<Vec<String>> {
    let mut files = vec!["README.md".to_owned()];
    for dir in ["docs", "docs/ingress"] {
        let mut names: Vec<String> = std::fs::read_dir(repo().join(dir))
            .with_context(|| format!("reading {dir}"))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".md"))
            .collect();
        names.sort();
        files.extend(names.into_iter().map(|n| format!("{dir}/{n}")));
    }
    Ok(files)
}

fn all_commands() -> Result<Vec<DocCommand>> {
    let mut out = Vec::new();
    for file in doc_files()? {
        let text = std::fs::read_to_string(repo().join(&file))
            .with_context(|| format!("reading {file}"))?;
        out.extend(extract(&file, &text));
    }
    Ok(out)
}

/// The docs' commands and which of them this test has run.
struct Ledger {
    commands: Vec<DocCommand>,
    ran: BTreeSet<usize>,
}

impl Ledger {
    /// The first command of `file` not yet run that starts with `prefix`, marked as run.
    fn take(&mut self, file: &str, prefix: &str) -> Result<String> {
        let found =
            self.commands.iter().enumerate().find(|(i, c)| {
                c.file == file && c.text.starts_with(prefix) && !self.ran.contains(i)
            });
        let Some((i, command)) = found else {
            bail!("{file} has no (further) command starting with {prefix:?}");
        };
        let text = command.text.clone();
        self.ran.insert(i);
        Ok(text)
    }

    /// Fails unless every command was run here or is in [`ELSEWHERE`] or [`NOT_HERE`], and
    /// every table entry names a command.
    fn check_accounted(&self) -> Result<()> {
        let mut problems = Vec::new();
        let matches = |c: &DocCommand, file: &str, prefix: &str| {
            c.file == file && (c.text.starts_with(prefix) || c.text == prefix.trim_end())
        };
        for (i, c) in self.commands.iter().enumerate() {
            let elsewhere = ELSEWHERE.iter().any(|e| matches(c, e.file, e.command));
            let not_here = NOT_HERE.iter().any(|(f, p, _)| matches(c, f, p));
            let ran = self.ran.contains(&i);
            match (ran, elsewhere, not_here) {
                (true, false, false) | (false, true, false) | (false, false, true) => {}
                (false, false, false) => problems.push(format!(
                    "{}:{}: not run by any test and not listed as not runnable:\n{}",
                    c.file, c.line, c.text
                )),
                _ => problems.push(format!(
                    "{}:{}: accounted for more than once:\n{}",
                    c.file, c.line, c.text
                )),
            }
        }
        for e in ELSEWHERE {
            if !self.commands.iter().any(|c| matches(c, e.file, e.command)) {
                problems.push(format!(
                    "ELSEWHERE names no command: {} {:?}",
                    e.file, e.command
                ));
            }
        }
        for (file, prefix, _) in NOT_HERE {
            if !self.commands.iter().any(|c| matches(c, file, prefix)) {
                problems.push(format!("NOT_HERE names no command: {file} {prefix:?}"));
            }
        }
        ensure!(problems.is_empty(), "{}", problems.join("\n\n"));
        Ok(())
    }
}

#[test]
fn extraction_finds_commands_continuations_and_loops() {
    let text = "x\n```sh\n# comment\na --b \\\n  c\n\nfor x in 1 2; do\n  echo $x\ndone\n```\n\
                ```yaml\nkubectl: no\n```\n```console\n$ kubectl get pods\nNAME READY\n```\n";
    let commands: Vec<String> = extract("f", text).into_iter().map(|c| c.text).collect();
    assert_eq!(
        commands,
        [
            "a --b \\\n  c",
            "for x in 1 2; do\n  echo $x\ndone",
            "kubectl get pods"
        ]
    );
}

/// The other tests still do what [`ELSEWHERE`] says they do.
#[test]
fn commands_run_elsewhere_are_run_there() -> Result<()> {
    for e in ELSEWHERE {
        ensure!(repo().join(e.test).is_file(), "{} does not exist", e.test);
        for (file, needle) in e.evidence {
            let text = std::fs::read_to_string(repo().join(file))
                .with_context(|| format!("reading {file}"))?;
            ensure!(
                text.contains(needle),
                "{file} no longer contains {needle:?}, which shows that {} runs {:?} ({})",
                e.test,
                e.command,
                e.why
            );
        }
    }
    let ci = std::fs::read_to_string(repo().join(".ci/run")).context("reading .ci/run")?;
    ensure!(
        ci.lines().any(|l| l.trim() == "hack/test.sh"),
        ".ci/run no longer runs hack/test.sh"
    );
    Ok(())
}

/// A scratch directory that looks like a checkout, removed when dropped.
struct Scratch {
    root: PathBuf,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

impl Scratch {
    /// Symlinks to every top-level entry of the repository except `target`; `target/demo` laid
    /// out like a devstack state directory (the shared stack's files, and a kubeconfig whose
    /// namespace is `namespace`); `target/debug/devstack`; a private `HOME`; `bin/` on `PATH`
    /// with `kubectl-portcullis`, as an installed kubectl plugin.
    fn new(cluster: &TestCluster, namespace: &str) -> Result<Self> {
        let root = std::env::temp_dir().join(format!("portcullis-docs-{namespace}"));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root)?;
        let scratch = Scratch { root };
        for entry in std::fs::read_dir(repo())? {
            let entry = entry?;
            let name = entry.file_name();
            if name == "target" || name == ".git" {
                continue;
            }
            std::os::unix::fs::symlink(entry.path(), scratch.root.join(&name))?;
        }
        let info = cluster.info();
        let demo = scratch.root.join("target/demo");
        std::fs::create_dir_all(&demo)?;
        for entry in std::fs::read_dir(&info.state_dir)? {
            let entry = entry?;
            if entry.file_name() == "kubeconfig" {
                continue;
            }
            std::os::unix::fs::symlink(entry.path(), demo.join(entry.file_name()))?;
        }
        ensure!(
            info.kubeconfig == info.state_dir.join("kubeconfig"),
            "devstack no longer writes <state-dir>/kubeconfig, which the quickstart exports"
        );
        let kubeconfig = demo.join("kubeconfig");
        std::fs::copy(&info.kubeconfig, &kubeconfig)?;
        let set_ns = Command::new(Tool::Kubectl.path()?)
            .args([
                "config",
                "set-context",
                "--current",
                "--namespace",
                namespace,
            ])
            .env("KUBECONFIG", &kubeconfig)
            .output()?;
        ensure!(
            set_ns.status.success(),
            "{}",
            String::from_utf8_lossy(&set_ns.stderr)
        );
        let debug = scratch.root.join("target/debug");
        std::fs::create_dir_all(&debug)?;
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_devstack"), debug.join("devstack"))?;
        let bin = scratch.root.join("bin");
        std::fs::create_dir_all(&bin)?;
        std::os::unix::fs::symlink(
            portcullis_tests::fsutil::sibling_binary("kubectl-portcullis")?,
            bin.join("kubectl-portcullis"),
        )?;
        std::fs::create_dir_all(scratch.home())?;
        Ok(scratch)
    }

    fn home(&self) -> PathBuf {
        self.root.join("home")
    }

    fn kubeconfig(&self) -> PathBuf {
        self.root.join("target/demo/kubeconfig")
    }

    /// Runs `script` with `sh -e` in the scratch checkout, the tools on `PATH`, the private
    /// `HOME` and the scratch kubeconfig (namespace of the test); fails unless it succeeds.
    fn sh(&self, script: &str) -> Result<String> {
        let out = self.sh_with(script, Some(&self.kubeconfig()))?;
        ensure!(
            out.status.success(),
            "{script}\nexited with {}:\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn sh_with(&self, script: &str, kubeconfig: Option<&Path>) -> Result<Output> {
        self.sh_in(&self.root, script, kubeconfig)
    }

    /// Like [`Scratch::sh_with`], in `dir`.
    fn sh_in(&self, dir: &Path, script: &str, kubeconfig: Option<&Path>) -> Result<Output> {
        let tools = Tool::Kubectl.path()?;
        let tools = tools.parent().context("kubectl has no directory")?;
        let path = std::env::var_os("PATH").unwrap_or_default();
        let path = std::env::join_paths(
            [self.root.join("bin"), tools.to_owned()]
                .into_iter()
                .chain(std::env::split_paths(&path)),
        )?;
        let mut cmd = Command::new("sh");
        cmd.arg("-ec")
            .arg(script)
            .current_dir(dir)
            .env("PATH", path)
            .env("HOME", self.home())
            .env_remove("XDG_CACHE_HOME")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_DATA_HOME")
            // npm's cache stays the user's: the private HOME would download everything again.
            .env(
                "npm_config_cache",
                std::env::var_os("npm_config_cache").unwrap_or_else(|| {
                    std::env::var_os("HOME")
                        .map(|h| Path::new(&h).join(".npm").into_os_string())
                        .unwrap_or_default()
                }),
            );
        match kubeconfig {
            Some(k) => cmd.env("KUBECONFIG", k),
            None => cmd.env_remove("KUBECONFIG"),
        };
        cmd.output().with_context(|| format!("running {script}"))
    }
}

/// The commands of the install page (and the README's `helm install`) with the release and
/// namespace `portcullis` replaced by `name`: cluster-scoped RBAC objects are named after the
/// release, so it must be unique in the shared cluster.
fn own_release(command: &str, name: &str) -> String {
    let mut out = command
        .replace("helm install portcullis ", &format!("helm install {name} "))
        .replace("helm upgrade portcullis ", &format!("helm upgrade {name} "))
        .replace(
            "helm uninstall portcullis ",
            &format!("helm uninstall {name} "),
        )
        .replace(
            "create namespace portcullis",
            &format!("create namespace {name}"),
        )
        .replace("release-name=portcullis", &format!("release-name={name}"))
        .replace(
            "release-namespace=portcullis",
            &format!("release-namespace={name}"),
        );
    for (from, to) in [
        ("-n portcullis ", format!("-n {name} ")),
        ("-n portcullis\n", format!("-n {name}\n")),
    ] {
        out = out.replace(from, &to);
    }
    if out.ends_with("-n portcullis") {
        out = format!("{}{name}", out.trim_end_matches("portcullis"));
    }
    out
}

/// A session as the gateway creates one at login.
fn session_yaml(name: &str, subject: &str) -> String {
    format!(
        "apiVersion: access.portcullis.dev/v1alpha1\nkind: AccessSession\nmetadata:\n  name: {name}\n\
         spec:\n  subject: {subject}\n  email: {subject}@example.com\n  identityProvider: dex\n\
         \x20 issuedAt: \"2026-01-01T00:00:00Z\"\n  expiresAt: \"2099-01-01T00:00:00Z\"\n"
    )
}

async fn revoked(api: &Api<AccessSession>, name: &str) -> Result<bool> {
    Ok(api.get(name).await?.spec.revoked)
}

async fn epoch(api: &Api<AccessPolicy>, name: &str) -> Result<i64> {
    Ok(api.get(name).await?.spec.revocation_epoch)
}

/// The column names a command's trailing comment promises (`# A, B, C`) are in the header.
fn shows_columns(command: &str, output: &str) -> Result<()> {
    let promised = command
        .rsplit_once('#')
        .map(|(_, c)| c)
        .context("no column comment")?;
    let header = output.lines().next().unwrap_or_default();
    for column in promised.split(',').map(str::trim) {
        ensure!(
            header.split_whitespace().any(|h| h == column),
            "{command}: no column {column} in {header:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn every_docs_command_runs() {
    let cluster = TestCluster::shared().await;
    let mut ledger = Ledger {
        commands: all_commands().expect("reading the docs"),
        ran: BTreeSet::new(),
    };
    let ledger_ref = &mut ledger;
    let result = cluster
        .with_temp_ns("docs", |client, ns| async move {
            let install_ns = format!("{ns}-install");
            let outcome = walk(cluster, ledger_ref, client.clone(), &ns, &install_ns).await;
            // Whatever happened: the install namespace goes, the shared CRDs come back.
            let _ = Api::<Namespace>::all(client.clone())
                .delete(&install_ns, &DeleteParams::background())
                .await;
            let _ = Api::<AccessPolicy>::namespaced(client.clone(), "default")
                .delete("apps", &DeleteParams::default())
                .await;
            restore_crds(&client).await.and(outcome)
        })
        .await;
    result.expect("running the docs commands");
    ledger
        .check_accounted()
        .expect("every docs command accounted for");
}

/// Waits until the CRDs are gone (if being deleted), then installs them again.
async fn restore_crds(client: &kube::Client) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(120);
    for name in CRDS {
        while crds
            .get_opt(name)
            .await?
            .is_some_and(|c| c.metadata.deletion_timestamp.is_some())
        {
            ensure!(Instant::now() < deadline, "CRD {name} still terminating");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    install_crds(client).await
}

async fn walk(
    cluster: &TestCluster,
    ledger: &mut Ledger,
    client: kube::Client,
    ns: &str,
    install_ns: &str,
) -> Result<()> {
    let scratch = Scratch::new(cluster, ns)?;
    let sessions: Api<AccessSession> = Api::namespaced(client.clone(), ns);
    let policies: Api<AccessPolicy> = Api::namespaced(client.clone(), ns);

    // README, "Policies": the CRDs and the example policy (which names its namespace,
    // `default`); then what `kubectl get` shows, with objects of this test in its namespace.
    scratch.sh(&ledger.take("README.md", "kubectl apply -f crds/yaml/")?)?;
    let out = scratch.sh(&ledger.take("README.md", "kubectl apply -f examples/policy.yaml")?)?;
    ensure!(
        out.contains("accesspolicy.access.portcullis.dev/apps"),
        "{out}"
    );
    Api::<AccessPolicy>::namespaced(client.clone(), "default")
        .get("apps")
        .await
        .context("examples/policy.yaml did not create default/apps")?;
    let example = std::fs::read_to_string(repo().join("examples/policy.yaml"))?;
    ensure!(
        example.contains("namespace: default"),
        "examples/policy.yaml moved namespace"
    );
    scratch.sh(&format!(
        "kubectl apply -f - <<'EOF'\n{}\n---\n{}\n---\n{}\n---\n{}\n---\n{}\nEOF",
        example.replace("namespace: default", &format!("namespace: {ns}")),
        session_yaml("one", "carol"),
        session_yaml("two", "dave"),
        session_yaml("three", "dave"),
        session_yaml("four", "erin"),
    ))?;
    for command in ["kubectl get accesspolicies", "kubectl get accesssessions"] {
        let command = ledger.take("README.md", command)?;
        shows_columns(&command, &scratch.sh(&command)?)?;
    }

    // README, "Revoking": one session, every session of a user, a policy's epoch.
    let command = ledger.take("README.md", "kubectl patch accesssession NAME")?;
    scratch.sh(&command.replace("NAME", "one"))?;
    ensure!(revoked(&sessions, "one").await?, "{command} did not revoke");
    ensure!(
        !revoked(&sessions, "two").await?,
        "{command} revoked too much"
    );
    let command = ledger.take("README.md", "kubectl get accesssessions --field-selector")?;
    scratch.sh(&command.replace("SUBJECT", "dave"))?;
    for (name, expected) in [("two", true), ("three", true), ("four", false)] {
        ensure!(
            revoked(&sessions, name).await? == expected,
            "{command}: session {name}"
        );
    }

    // Quickstart: the demo's kubeconfig, its revocations (against this test's objects).
    let mut script = ledger.take(
        "docs/quickstart.md",
        "export KUBECONFIG=$PWD/target/demo/kubeconfig",
    )?;
    for prefix in [
        "kubectl get accesssessions",
        "kubectl patch accesssession NAME",
    ] {
        script += "\n";
        script += &ledger
            .take("docs/quickstart.md", prefix)?
            .replace("NAME", "four");
    }
    let out = scratch
        .sh_with(&script, None)
        .and_then(|o| {
            ensure!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            Ok(String::from_utf8_lossy(&o.stdout).into_owned())
        })
        .with_context(|| script.clone())?;
    ensure!(
        out.contains("four") && out.contains("patched"),
        "{script}:\n{out}"
    );
    ensure!(revoked(&sessions, "four").await?, "{script} did not revoke");
    scratch.sh(&format!(
        "kubectl apply -f - <<'EOF'\n{}\nEOF",
        session_yaml("five", "frank")
    ))?;
    let command = ledger.take(
        "docs/quickstart.md",
        "kubectl get accesssessions --field-selector",
    )?;
    scratch.sh(&command.replace("SUBJECT", "frank"))?;
    ensure!(
        revoked(&sessions, "five").await?,
        "{command} did not revoke"
    );

    ensure!(epoch(&policies, "apps").await? == 0, "fresh policy epoch");
    let command = ledger.take("docs/quickstart.md", "kubectl patch accesspolicy apps")?;
    scratch.sh(&command)?;
    ensure!(epoch(&policies, "apps").await? == 1, "{command}");
    let command = ledger.take("README.md", "kubectl patch accesspolicy NAME")?;
    scratch.sh(&command.replace("NAME", "apps"))?;
    ensure!(
        epoch(&policies, "apps").await? == 2,
        "{command} did not raise the epoch by one"
    );

    // Quickstart: trusting the demo CA in a fresh NSS database, under the private HOME.
    let mut script = String::new();
    for prefix in [
        "mkdir -p $HOME/.pki/nssdb",
        "[ -f $HOME/.pki/nssdb/cert9.db ]",
        "certutil",
    ] {
        script += &ledger.take("docs/quickstart.md", prefix)?;
        script += "\n";
    }
    ensure!(
        scratch.root.join("target/demo/pki/ca.crt").is_file(),
        "the stack has no pki/ca.crt"
    );
    scratch.sh(&script)?;
    let listed = scratch.sh("certutil -d sql:$HOME/.pki/nssdb -L -n portcullis-demo")?;
    ensure!(
        listed.contains("Valid CA"),
        "the CA is not trusted:\n{listed}"
    );

    // Quickstart: the automated story against a demo of your own (the demo is the shared stack
    // here; the story itself needs Chromium and runs in browser.rs).
    // In the repository itself: npm does not install into a symlinked prefix.
    let npm = ledger.take("docs/quickstart.md", "npm ci --prefix e2e")?;
    let out = scratch.sh_in(&repo(), &npm, None)?;
    ensure!(
        out.status.success(),
        "{npm}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        repo().join("e2e/node_modules/playwright-core").is_dir(),
        "npm ci installed no playwright-core"
    );
    let eval = ledger.take("docs/quickstart.md", "eval \"$(target/debug/devstack env")?;
    let out = scratch
        .sh_with(
            &format!(
                "{eval}\nprintf '%s\\n' \"$KUBECONFIG\" \"$PORTCULLIS_CA_FILE\" \"$PORTCULLIS_DEX_ISSUER\"\nkubectl get accesspolicies -A >/dev/null"
            ),
            None,
        )?;
    ensure!(
        out.status.success(),
        "{eval}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    let info = cluster.info();
    let expected = format!(
        "{}\n{}\n{}\n",
        info.kubeconfig.display(),
        info.ca_file.display(),
        info.dex.issuer
    );
    ensure!(
        printed == expected,
        "{eval} exported {printed:?}, not {expected:?}"
    );

    plugin(ledger, &scratch, &sessions, &policies, ns).await?;

    install(ledger, &scratch, &client, install_ns).await
}

/// The first words of each table row after the header.
fn first_column(output: &str) -> Vec<&str> {
    output
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect()
}

/// The README's `kubectl portcullis` lines, then docs/cli.md from top to bottom, with the
/// plugin on `PATH` (kubectl discovers it there) and the session namespace exported as the page
/// says, pointing at this test's namespace.
async fn plugin(
    ledger: &mut Ledger,
    scratch: &Scratch,
    sessions: &Api<AccessSession>,
    policies: &Api<AccessPolicy>,
    ns: &str,
) -> Result<()> {
    const PAGE: &str = "docs/cli.md";
    scratch.sh(&format!(
        "kubectl apply -f - <<'EOF'\n{}\nEOF",
        [
            ("p-alice-1", "alice"),
            ("p-alice-2", "alice"),
            ("p-bob", "bob"),
            ("p-carol", "carol"),
            ("p-dan-1", "dan"),
            ("p-dan-2", "dan"),
        ]
        .map(|(name, subject)| session_yaml(name, subject))
        .join("\n---\n")
    ))?;

    let listed = scratch.sh(&ledger.take(PAGE, "kubectl plugin list")?)?;
    ensure!(listed.contains("/kubectl-portcullis"), "{listed}");
    let help = scratch.sh(&ledger.take(PAGE, "kubectl portcullis --help")?)?;
    ensure!(help.contains("Exit codes:"), "{help}");
    let export = ledger.take(PAGE, "export PORTCULLIS_SESSION_NAMESPACE=portcullis")?;
    ensure!(
        export.trim() == "export PORTCULLIS_SESSION_NAMESPACE=portcullis",
        "{export}"
    );
    let export = export.replace("=portcullis", &format!("={ns}"));
    let run = |command: &str| scratch.sh(&format!("{export}\n{command}"));

    // README, "Revoking".
    let command = ledger.take(
        "README.md",
        "kubectl portcullis sessions --email alice@example.com",
    )?;
    let out = run(&command)?;
    ensure!(
        first_column(&out) == ["p-alice-1", "p-alice-2"],
        "{command}:\n{out}"
    );
    let command = ledger.take("README.md", "kubectl portcullis revoke session NAME")?;
    run(&command.replace("NAME", "p-alice-1"))?;
    ensure!(revoked(sessions, "p-alice-1").await?, "{command}");
    ensure!(
        !revoked(sessions, "p-alice-2").await?,
        "{command} revoked too much"
    );
    let command = ledger.take("README.md", "kubectl portcullis revoke user SUBJECT")?;
    run(&command.replace("SUBJECT", "bob"))?;
    ensure!(revoked(sessions, "p-bob").await?, "{command}");
    ensure!(
        !revoked(sessions, "p-carol").await?,
        "{command} revoked too much"
    );
    let before = epoch(policies, "apps").await?;
    let command = ledger.take("README.md", "kubectl portcullis revoke policy NAME")?;
    let out = run(&command.replace("NAME", "apps"))?;
    ensure!(
        out.contains(&format!("revocationEpoch {before} → {}", before + 1))
            && epoch(policies, "apps").await? == before + 1,
        "{command}:\n{out}"
    );

    // docs/cli.md, in page order.
    let command = ledger.take(PAGE, "kubectl portcullis sessions")?;
    ensure!(command == "kubectl portcullis sessions", "{command}");
    let out = run(&command)?;
    for name in ["p-alice-1", "p-bob", "p-dan-2"] {
        ensure!(
            first_column(&out).contains(&name),
            "{command}: no {name}:\n{out}"
        );
    }
    let command = ledger.take(
        PAGE,
        "kubectl portcullis sessions --email alice@example.com --active",
    )?;
    let out = run(&command)?;
    ensure!(first_column(&out) == ["p-alice-2"], "{command}:\n{out}");
    let command = ledger.take(PAGE, "kubectl portcullis sessions --user SUBJECT -o wide")?;
    let out = run(&command.replace("SUBJECT", "dan"))?;
    ensure!(
        first_column(&out) == ["p-dan-1", "p-dan-2"]
            && out.lines().next().is_some_and(|h| h.contains("SUBJECT")),
        "{command}:\n{out}"
    );
    let command = ledger.take(PAGE, "kubectl portcullis revoke session NAME --reason")?;
    run(&command.replace("NAME", "p-carol"))?;
    let carol = sessions.get("p-carol").await?.spec;
    ensure!(
        carol.revoked && carol.revocation_reason.as_deref() == Some("laptop stolen"),
        "{command}: {carol:?}"
    );
    let command = ledger.take(PAGE, "kubectl portcullis revoke user SUBJECT --reason")?;
    let out = run(&command.replace("SUBJECT", "dan"))?;
    for name in ["p-dan-1", "p-dan-2"] {
        let dan = sessions.get(name).await?.spec;
        ensure!(
            dan.revoked && dan.revocation_reason.as_deref() == Some("left the company"),
            "{command}: {name}: {dan:?}\n{out}"
        );
    }
    // The first of the two on the page: the other waits (see ELSEWHERE).
    let command = ledger.take(
        PAGE,
        "kubectl portcullis revoke user --email alice@example.com",
    )?;
    ensure!(
        !command.contains("--wait"),
        "took the --wait command: {command}"
    );
    run(&command)?;
    ensure!(revoked(sessions, "p-alice-2").await?, "{command}");
    let before = epoch(policies, "apps").await?;
    let command = ledger.take(
        PAGE,
        "kubectl portcullis revoke policy NAME -n NAMESPACE --reason",
    )?;
    run(&command.replace("NAMESPACE", ns).replace("NAME", "apps"))?;
    let policy = policies.get("apps").await?;
    let reason = policy
        .metadata
        .annotations
        .unwrap_or_default()
        .remove("access.portcullis.dev/revocation-reason");
    ensure!(
        policy.spec.revocation_epoch == before + 1
            && reason == Some(format!("epoch {}: suspected token leak", before + 1)),
        "{command}: epoch {}, reason {reason:?}",
        policy.spec.revocation_epoch
    );
    let command = ledger.take(PAGE, "kubectl portcullis status")?;
    let out = run(&command)?;
    ensure!(
        out.lines()
            .any(|l| l.split_whitespace().take(2).eq([ns, "apps"]))
            && out.contains(&format!("Sessions in namespace {ns}: ")),
        "{command}:\n{out}"
    );
    Ok(())
}

/// The install page from top to bottom (and the README's `helm install`), in a namespace and
/// release of this test's own; last, the CRDs are deleted as the uninstall section says.
async fn install(
    ledger: &mut Ledger,
    scratch: &Scratch,
    client: &kube::Client,
    name: &str,
) -> Result<()> {
    const PAGE: &str = "docs/install.md";
    let mut run = |prefix: &str| -> Result<String> {
        let command = own_release(&ledger.take(PAGE, prefix)?, name);
        scratch.sh(&command)
    };
    run("kubectl create namespace portcullis")?;
    run("kubectl -n portcullis create secret generic portcullis-idp-corp")?;
    // The CRDs exist already (`kubectl apply -f crds/yaml/` above): adopt them first, as the
    // page says for that case.
    run("for crd in ")?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in CRDS {
        let crd = crds.get(crd).await?;
        let annotations = crd.metadata.annotations.unwrap_or_default();
        ensure!(
            annotations
                .get("meta.helm.sh/release-name")
                .map(String::as_str)
                == Some(name),
            "the adoption loop did not annotate {:?}",
            crd.metadata.name
        );
    }
    let out = run("helm install portcullis charts/portcullis")?;
    ensure!(out.contains("STATUS: deployed"), "{out}");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), name);
    let gateway = format!("{name}-portcullis-gateway");
    deployments
        .get(&gateway)
        .await
        .context("no gateway Deployment")?;

    // Keys of your own.
    for prefix in [
        "openssl genpkey",
        "head -c 32 /dev/urandom",
        "kubectl -n portcullis create secret generic portcullis-keys",
        "helm upgrade portcullis charts/portcullis -n portcullis --reuse-values",
    ] {
        run(prefix)?;
    }
    let pem = std::fs::read_to_string(scratch.root.join("signing-key.pem"))?;
    ensure!(
        pem.starts_with("-----BEGIN PRIVATE KEY-----"),
        "not PKCS#8: {pem}"
    );
    ensure!(std::fs::read(scratch.root.join("session-key"))?.len() == 32);
    let args = gateway_args(&deployments, &gateway).await?;
    for arg in [
        "--signing-key-file=/etc/portcullis/signing-key/signing-key.pem",
        "--session-key-file=/etc/portcullis/session-key/key",
    ] {
        ensure!(args.iter().any(|a| a == arg), "no {arg} in {args:?}");
    }
    let volumes = deployments
        .get(&gateway)
        .await?
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|s| s.volumes)
        .unwrap_or_default();
    for volume in ["signing-key", "session-key"] {
        let secret = volumes
            .iter()
            .find(|v| v.name == volume)
            .and_then(|v| v.secret.as_ref())
            .and_then(|s| s.secret_name.clone());
        ensure!(
            secret.as_deref() == Some("portcullis-keys"),
            "{volume}: {secret:?}"
        );
    }

    // Upgrade with a values file of your own: the example's, with three gateway replicas.
    let example = std::fs::read_to_string(repo().join("examples/ingress/gateway-api/values.yaml"))?;
    ensure!(
        example.contains("\ngateway:\n"),
        "no gateway: section in the example values"
    );
    std::fs::write(
        scratch.root.join("my-values.yaml"),
        example.replacen("\ngateway:\n", "\ngateway:\n  replicaCount: 3\n", 1),
    )?;
    run("helm upgrade portcullis charts/portcullis -n portcullis -f my-values.yaml")?;
    let replicas = deployments
        .get(&gateway)
        .await?
        .spec
        .and_then(|s| s.replicas);
    ensure!(
        replicas == Some(3),
        "my-values.yaml not applied: {replicas:?}"
    );

    // Uninstall keeps the CRDs; the README's one-command install then works again.
    run("helm uninstall portcullis -n portcullis")?;
    ensure!(
        deployments.get_opt(&gateway).await?.is_none(),
        "uninstall left the gateway"
    );
    for crd in CRDS {
        ensure!(
            crds.get_opt(crd).await?.is_some(),
            "uninstall deleted {crd}"
        );
    }
    let readme = own_release(
        &ledger.take("README.md", "helm install portcullis charts/portcullis")?,
        name,
    );
    let out = scratch.sh(&readme)?;
    ensure!(out.contains("STATUS: deployed"), "{readme}: {out}");
    deployments
        .get(&gateway)
        .await
        .context("README install: no gateway")?;
    scratch.sh(&format!("helm uninstall {name} -n {name}"))?;

    // Last: deleting the CRDs deletes every AccessPolicy and AccessSession.
    let mut run = |prefix: &str| -> Result<String> {
        let command = own_release(&ledger.take(PAGE, prefix)?, name);
        scratch.sh(&command)
    };
    run("kubectl delete crd")?;
    for crd in CRDS {
        ensure!(crds.get_opt(crd).await?.is_none(), "{crd} not deleted");
    }
    Ok(())
}

async fn gateway_args(deployments: &Api<Deployment>, name: &str) -> Result<Vec<String>> {
    let deployment = deployments.get(name).await?;
    let container = deployment
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|s| s.containers.into_iter().next())
        .context("no container")?;
    Ok(container.args.unwrap_or_default())
}
