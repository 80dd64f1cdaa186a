//! The Helm chart in `charts/herald`, checked with Helm's own engine.
//!
//! The checks are in `tests/chart/check_chart.py`: they load, lint, render and dry-run install
//! the chart with helm-python-sdk (Helm as a library, no `helm` binary), validate core objects
//! against the Kubernetes schemas and Herald's policies against the CRDs in `crds/`. Each check
//! is one test here. The Python environment is made on first use in `target/chart-venv` from
//! `tests/chart/requirements.txt` (needs `python3` with `venv` and access to PyPI); when that
//! fails, every test fails and says why.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the workspace directory")
}

fn script() -> PathBuf {
    workspace().join("tests/chart/check_chart.py")
}

/// The virtualenv's Python, made (once per test run, under a file lock) if missing or if its
/// requirements changed.
fn python() -> &'static Path {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match PYTHON.get_or_init(make_venv) {
        Ok(python) => python,
        Err(e) => panic!("cannot make the chart tests' Python environment: {e}"),
    }
}

fn make_venv() -> Result<PathBuf, String> {
    let root = workspace();
    let target = root.join("target");
    let venv = target.join("chart-venv");
    let python = venv.join("bin/python");
    let requirements = root.join("tests/chart/requirements.txt");
    let wanted = fs::read_to_string(&requirements)
        .map_err(|e| format!("{}: {e}", requirements.display()))?;
    let marker = venv.join(".herald-requirements");

    fs::create_dir_all(&target).map_err(|e| format!("{}: {e}", target.display()))?;
    // Another test run (another target dir, same workspace) may be making it too.
    let lock_path = target.join("chart-venv.lock");
    let lock = File::create(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("locking {}: {e}", lock_path.display()))?;

    if python.exists() && fs::read_to_string(&marker).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(python);
    }
    let base = std::env::var("HERALD_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    eprintln!(
        "chart tests: making {} with {base} (pip install -r {})",
        venv.display(),
        requirements.display()
    );
    run(
        Command::new(&base)
            .args(["-m", "venv", "--clear"])
            .arg(&venv),
        &format!(
            "`{base} -m venv {}` (is python3 with the venv module installed? \
             HERALD_PYTHON names another interpreter)",
            venv.display()
        ),
    )?;
    run(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "--quiet",
                "-r",
            ])
            .arg(&requirements),
        "`pip install -r tests/chart/requirements.txt` (is PyPI reachable?)",
    )?;
    fs::write(&marker, &wanted).map_err(|e| format!("{}: {e}", marker.display()))?;
    Ok(python)
}

fn run(command: &mut Command, what: &str) -> Result<(), String> {
    let out = command
        .output()
        .map_err(|e| format!("{what} could not start: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

fn check_chart(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(python())
        .arg(script())
        .args(args)
        .env("HERALD_BIN", env!("CARGO_BIN_EXE_herald"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("the chart checks start");
    let stderr = String::from_utf8_lossy(&out.stderr)
        .lines()
        // Helm notes each time it follows charts/herald/crds -> ../../crds.
        .filter(|l| !l.contains("found symbolic link in path"))
        .collect::<Vec<_>>()
        .join("\n");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    )
}

/// Runs one check; it must report `PASS` (a `SKIP` fails here).
fn run_check(name: &str) {
    let (ok, stdout, stderr) = check_chart(&[name]);
    print!("{stdout}");
    eprint!("{stderr}");
    assert!(ok, "chart check {name} failed:\n{stdout}{stderr}");
    assert!(
        stdout.lines().any(|l| l == format!("PASS {name}")),
        "chart check {name} did not pass:\n{stdout}{stderr}"
    );
}

macro_rules! chart_checks {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run_check(stringify!($name));
            }
        )*
        const CHECKS: &[&str] = &[$(stringify!($name)),*];
    };
}

// In the order `check_chart.py --list` gives: by module (tests/chart/checks_*.py).
chart_checks! {
    lint,
    default_render,
    core_objects_valid,
    deployment,
    controller_args,
    notes,
    flagger_values,
    receiver_variants,
    existing_secret,
    slack_bot,
    slack_bot_existing_secret,
    slack_bot_errors,
    pagerduty_default_policy,
    schema_rejects_typos,
    crds_match,
    policies_match_crd,
    rbac,
    service,
    monitoring,
    event_token,
    state_dir,
    gates_off_by_default,
    gates_values,
    gates_rbac,
}

#[test]
fn every_chart_check_is_a_test() {
    let (ok, stdout, stderr) = check_chart(&["--list"]);
    assert!(ok, "check_chart.py --list failed:\n{stdout}{stderr}");
    let listed: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        listed, CHECKS,
        "tests/chart/check_chart.py and chart.rs list different checks"
    );
}
