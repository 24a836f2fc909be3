//! `agora sweep` (CONTRACT.md, "Metrics, plots and sweeps"): rows that match single runs,
//! done runs skipped, `--jobs` changing nothing, failed runs recorded, bad input refused.

mod common;

use std::path::Path;
use std::process::Output;

use common::{agora, text};

const SMALL: &[&str] = &["--set", "agents.0.count=20", "--set", "scenario.ticks=6"];

fn sweep(out: &Path, extra: &[&str]) -> Output {
    agora()
        .args([
            "sweep",
            "scenarios/opinion.toml",
            "--quiet",
            "--no-plots",
            "--out",
        ])
        .arg(out)
        .args(SMALL)
        .args(extra)
        .output()
        .unwrap()
}

/// sweep.csv as a header and rows of fields (no field here holds a comma).
fn rows(out: &Path, name: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(out.join(format!("{name}-sweep/sweep.csv"))).unwrap();
    let mut lines = text
        .lines()
        .map(|l| l.split(',').map(str::to_string).collect::<Vec<_>>());
    (lines.next().unwrap(), lines.collect())
}

fn column(header: &[String], name: &str) -> usize {
    header
        .iter()
        .position(|h| h == name)
        .unwrap_or_else(|| panic!("no {name} in {header:?}"))
}

#[test]
fn a_sweep_runs_the_product_and_its_rows_match_single_runs() {
    let out = tempfile::tempdir().unwrap();
    let vary = [
        "--vary",
        "agents.0.params.epsilon=0.1,0.3",
        "--seeds",
        "4..5",
        "--jobs",
        "2",
    ];
    let output = sweep(out.path(), &vary);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let (header, body) = rows(out.path(), "opinion");
    assert_eq!(
        header[..9],
        [
            "run",
            "seed",
            "agents.0.params.epsilon",
            "stop_reason",
            "ticks",
            "messages",
            "deliveries",
            "elapsed_s",
            "transcript_sha256"
        ]
    );
    assert!(header.contains(&"clusters".to_string()), "{header:?}");
    let seen: Vec<(String, String)> = body.iter().map(|r| (r[2].clone(), r[1].clone())).collect();
    assert_eq!(
        seen,
        [("0.1", "4"), ("0.1", "5"), ("0.3", "4"), ("0.3", "5")].map(|(e, s)| (e.to_string(), s.to_string()))
    );
    assert!(body.iter().all(|r| r[3] == "ticks" && r[4] == "6"));

    // The row of epsilon 0.3, seed 5 is that run's, done on its own.
    let single = tempfile::tempdir().unwrap();
    let output = agora()
        .args([
            "run",
            "scenarios/opinion.toml",
            "--quiet",
            "--no-plots",
            "--seed",
            "5",
            "--out",
        ])
        .arg(single.path())
        .args(SMALL)
        .args(["--set", "agents.0.params.epsilon=0.3"])
        .output()
        .unwrap();
    let hash = common::transcript_hash(&output);
    assert_eq!(body[3][column(&header, "transcript_sha256")], hash);
    let clusters = &body[3][column(&header, "clusters")];
    let run_metrics = std::fs::read_to_string(single.path().join("opinion-5/metrics.csv")).unwrap();
    assert!(
        run_metrics.contains(&format!("\n6,clusters,{clusters}\n")),
        "{clusters} {run_metrics}"
    );

    // Run again: everything is done. With a run cut short (no summary), only it runs.
    let summary = out.path().join("opinion-sweep/run-002/opinion-5/summary.json");
    let written = std::fs::metadata(&summary).unwrap().modified().unwrap();
    let again = sweep(out.path(), &vary);
    assert!(
        text(&again.stdout).contains("(0 run now, 4 done before, 0 failed)"),
        "{}",
        text(&again.stdout)
    );
    assert_eq!(std::fs::metadata(&summary).unwrap().modified().unwrap(), written);
    std::fs::remove_file(&summary).unwrap();
    let again = sweep(out.path(), &vary);
    assert!(
        text(&again.stdout).contains("(1 run now, 3 done before, 0 failed)"),
        "{}",
        text(&again.stdout)
    );
    let hashes = |out: &Path| -> Vec<String> {
        let (header, body) = rows(out, "opinion");
        body.iter()
            .map(|r| r[column(&header, "transcript_sha256")].clone())
            .collect()
    };
    let before: Vec<String> = body
        .iter()
        .map(|r| r[column(&header, "transcript_sha256")].clone())
        .collect();
    assert_eq!(
        hashes(out.path()),
        before,
        "the run done again gives the same transcript"
    );

    // More values and seeds: the runs done keep their results under their new numbers; a
    // smaller plan then sets aside what it no longer has.
    let wider = [
        "--vary",
        "agents.0.params.epsilon=0.05,0.1,0.3",
        "--seeds",
        "4..6",
    ];
    let again = sweep(out.path(), &wider);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(
        text(&again.stdout).contains("(5 run now, 4 done before, 0 failed)"),
        "{}",
        text(&again.stdout)
    );
    assert!(
        text(&again.stderr).contains("moved 4 completed runs to their numbers in this plan"),
        "{}",
        text(&again.stderr)
    );
    let (header, wide) = rows(out.path(), "opinion");
    let kept: Vec<String> = wide
        .iter()
        .filter(|r| r[2] != "0.05" && r[1] != "6")
        .map(|r| r[column(&header, "transcript_sha256")].clone())
        .collect();
    assert_eq!(kept, before, "the runs done before, moved, not run again");
    let folders = |out: &Path| -> usize {
        std::fs::read_dir(out.join("opinion-sweep"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("run-")
            })
            .count()
    };
    assert_eq!(folders(out.path()), 9);
    let narrow = sweep(out.path(), &vary);
    assert!(
        text(&narrow.stdout).contains("(0 run now, 4 done before, 0 failed)"),
        "{}",
        text(&narrow.stdout)
    );
    assert!(
        text(&narrow.stderr).contains("moved 5 run folders that are not in this plan"),
        "{}",
        text(&narrow.stderr)
    );
    assert_eq!(folders(out.path()), 4, "run-*/ holds this plan's runs only");
    assert_eq!(hashes(out.path()), before);

    // Another sweep into the same folder is refused, not mixed in.
    let other = sweep(out.path(), &["--vary", "agents.0.params.mu=0.2,0.3"]);
    assert_eq!(other.status.code(), Some(2), "{}", text(&other.stderr));
    assert!(
        text(&other.stderr).contains("holds another sweep"),
        "{}",
        text(&other.stderr)
    );
    assert_eq!(folders(out.path()), 4, "the refused sweep moved nothing");

    // --jobs 1: the same transcripts.
    let one = tempfile::tempdir().unwrap();
    let output = sweep(one.path(), &[&vary[..4], &["--jobs", "1"]].concat());
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(hashes(one.path()), before);
}

#[test]
fn a_failed_run_is_a_row_with_its_error_and_the_sweep_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let helper = Path::new(env!("CARGO_MANIFEST_DIR")).join("python");
    let script = dir.path().join("fragile.py");
    std::fs::write(
        &script,
        format!(
            "import sys\nsys.path.insert(0, {helper:?})\nfrom agora_behaviour import Behaviour, Effects, run\n\
             class Fragile(Behaviour):\n    params = {{'x': (1, 'fails the start when 2')}}\n\
             \x20   def on_start(self, state, ctx):\n        if ctx.params['x'] == 2:\n            raise ValueError('x is 2')\n\
             \x20       return Effects().publish('hi')\nrun(Fragile())\n"
        ),
    )
    .unwrap();
    let scenario = dir.path().join("fragile.toml");
    std::fs::write(
        &scenario,
        format!(
            "[scenario]\nname = \"fragile\"\nticks = 2\nmax_retries = 0\n[behaviours.fragile]\ncommand = [\"python3\", {:?}]\n\
             [[agents]]\nid = \"f\"\ncount = 2\nbehaviour = \"fragile\"\n",
            script.display().to_string()
        ),
    )
    .unwrap();
    let out = dir.path().join("out");
    let output = agora()
        .args([
            "sweep",
            "--quiet",
            "--no-plots",
            "--vary",
            "agents.0.params.x=1,2,3",
            "--out",
        ])
        .arg(&out)
        .arg(&scenario)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let (header, body) = rows(&out, "fragile");
    let error = column(&header, "error");
    assert_eq!(body.len(), 3);
    assert!(body[0][error].is_empty() && body[2][error].is_empty(), "{body:?}");
    assert!(
        body[1][error].starts_with("exit 1") && body[1][error].contains("x is 2"),
        "{body:?}"
    );
    assert!(
        text(&output.stderr).contains("1 of 3 runs failed"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn bad_sweeps_are_refused_before_any_run() {
    let out = tempfile::tempdir().unwrap();
    for (args, says) in [
        (&["--vary", "agents.0.params.epsilon"][..], "KEY=V1,V2"),
        (&["--vary", "x=1", "--seeds", "5..1"][..], "empty"),
        (&["--vary", "agents.0.params.epsilon=0.1,-2"][..], "epsilon"),
        (&["--vary", "scenario.seed=1,2"][..], "--seeds"),
        (&["--jobs", "0"][..], "at least 1"),
        (
            &["--vary", "agents.0.params.epslion=0.1,0.2"][..],
            "--vary agents.0.params.epslion",
        ),
    ] {
        let output = sweep(out.path(), args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&output.stderr)
        );
        assert!(
            text(&output.stderr).contains(says),
            "{args:?}: {}",
            text(&output.stderr)
        );
    }
    assert!(!out.path().join("opinion-sweep").exists(), "nothing ran");
}

#[test]
fn a_backend_that_cannot_be_used_stops_the_sweep_with_exit_3() {
    // Nothing listens on port 1: the first run exits 3, and the other five are not started.
    let out = tempfile::tempdir().unwrap();
    let output = sweep(
        out.path(),
        &[
            "--vary",
            "agents.0.params.epsilon=0.1,0.3",
            "--seeds",
            "1..3",
            "--jobs",
            "1",
            "--redis-url",
            "redis://127.0.0.1:1/0",
        ],
    );
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("error: cannot connect to Redis at 127.0.0.1:1"),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: the sweep stopped starting runs"),
        "{stderr}"
    );
    let (header, body) = rows(out.path(), "opinion");
    let error = column(&header, "error");
    let tried = body.iter().filter(|row| !row[error].is_empty()).count();
    assert_eq!(tried, 1, "one run tried: {body:?}");
}

#[test]
fn sigterm_stops_the_sweep_and_its_runs_with_their_outputs_written() {
    // SIGTERM (kill, systemd, a batch scheduler) reaches the sweep alone, unlike Ctrl-C at a
    // terminal: the sweep passes it on, its runs stop with their outputs, and it exits 130.
    let out = tempfile::tempdir().unwrap();
    let mut child = agora()
        .args(["sweep", "scenarios/w1.toml", "--quiet", "--no-plots", "--out"])
        .arg(out.path())
        .args(common::ENDLESS_W1)
        .args(["--seeds", "1..4", "--jobs", "2"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    common::wait_for_file(&out.path().join("w1-sweep/run-001/w1-1/transcript.jsonl.partial"));
    std::thread::sleep(std::time::Duration::from_millis(300));
    // SAFETY: sending a signal to the child we started.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    // A sweep that did not pass the signal on would wait for its runs for ever.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the sweep did not stop within 60 s of SIGTERM");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted:"), "{stderr}");
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("w1-sweep/run-001/w1-1/summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(summary["stop_reason"], "interrupted");
    let (header, body) = rows(out.path(), "w1");
    let error = column(&header, "error");
    assert!(
        !body.is_empty() && body.len() <= 2,
        "only the two running runs have rows: {body:?}"
    );
    for row in &body {
        assert_eq!(row[error], "interrupted (exit 130)", "{body:?}");
    }
}

#[test]
fn agora_plot_draws_a_sweep_again_from_its_csv() {
    let out = tempfile::tempdir().unwrap();
    let output = sweep(
        out.path(),
        &["--vary", "agents.0.params.epsilon=0.1,0.3", "--seeds", "1..2"],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let sweep_dir = out.path().join("opinion-sweep");
    assert!(!sweep_dir.join("plots").exists(), "--no-plots drew none");
    let plot = agora().arg("plot").arg(&sweep_dir).output().unwrap();
    assert!(plot.status.success(), "{}", text(&plot.stderr));
    let listed = text(&plot.stdout);
    let files: Vec<&str> = listed.lines().collect();
    assert!(
        files.iter().any(|f| f.ends_with("clusters.svg"))
            && files.iter().any(|f| f.ends_with("clusters.png")),
        "{listed}"
    );
    for file in files {
        assert!(std::fs::metadata(file).unwrap().len() > 1000, "{file}");
    }
}

#[test]
fn a_model_server_that_cannot_be_used_stops_a_sweep_over_the_temperature() {
    // The temperature does not decide which server is asked: nothing listening there is the
    // same for every run, and the sweep stops after the first (exit 3).
    let out = tempfile::tempdir().unwrap();
    let output = agora()
        .args([
            "sweep",
            "scenarios/llm-debate.toml",
            "--quiet",
            "--no-plots",
            "--jobs",
            "1",
            "--set",
            "llm.base_url=http://127.0.0.1:9/v1",
            "--vary",
            "llm.temperature=0.1,0.2,0.3",
            "--out",
        ])
        .arg(out.path())
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("hint: the sweep stopped starting runs"),
        "{stderr}"
    );
    let (header, body) = rows(out.path(), "llm-debate");
    let error = column(&header, "error");
    assert_eq!(
        body.iter().filter(|r| !r[error].is_empty()).count(),
        1,
        "{body:?}"
    );
}
