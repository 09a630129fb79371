//! Installing a generated tool (SPEC §5): its files into a folder of the tools dir, a
//! Python virtual environment with its dependencies, and an `ai_generated` stdio entry in
//! `mcp.json` written through the config API's own writer.
//!
//! Layout: `TOOLS_DIR/NAME/` holds the script files, `README.md`, `requirements.txt` (the
//! dependencies, one per line) and `.venv/`; the installer's output goes to
//! `LOG_DIR/tools/NAME.install.log`. The folder is reserved with an atomic `mkdir`, so two
//! installs never share one, and it is deleted again when any step fails: a tool is either
//! installed and registered or not there at all. Writing the files, reading the end of the
//! log and deleting a folder with its `.venv` run on tokio's blocking pool; every installer
//! step leads its own process group ([`mag_common::process_group`]).
//!
//! The `mcp.json` entry keeps MAG's shape (`mag/app/core/file_manager.py`) and adds `cwd`:
//! `{"command": TOOL/.venv/bin/python, "args": [TOOL/MAIN], "cwd": TOOL, "transportType":
//! "stdio", "ai_generated": true, "autoApprove": [], "disabled": false, "timeout": 60}`,
//! with absolute paths; a tool from a generation also gets `"conversation_id"`,
//! `"conversation_round"` and `"conversation_created_at"` (see `ToolOrigin`). MAIN is the
//! first of `main.py`, `main_server.py`, `server.py` that exists, else the first `.py` file
//! by name.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::process::Command;

use crate::error::{Error, Result};

mod step;

/// Bound on `python -m venv`.
pub const VENV_TIMEOUT: Duration = Duration::from_secs(120);

/// Bound on `pip install` of a tool's dependencies.
pub const PIP_TIMEOUT: Duration = Duration::from_secs(900);

/// A tool's files, as generation's `parsed_results` or `POST /api/mcp/register-tool` give
/// them.
#[derive(Debug, Clone)]
pub struct ToolFiles {
    /// The folder and server name.
    pub folder_name: String,
    /// `{FILE: TEXT}`; FILE may name a subfolder (`lib/util.py`).
    pub script_files: Map<String, Value>,
    /// `README.md`'s text.
    pub readme: String,
    /// pip requirements separated by spaces, commas or new lines.
    pub dependencies: String,
}

/// Where tools go and how they are installed.
#[derive(Debug, Clone)]
pub struct Toolsmith {
    /// `DATA_DIR/tools`.
    pub tools_dir: PathBuf,
    /// `LOG_DIR/tools`: the installers' output.
    pub log_dir: PathBuf,
    /// The Python that creates the virtual environments.
    pub python: PathBuf,
}

/// A tool on disk, ready to register.
#[derive(Debug, Clone)]
pub struct BuiltTool {
    /// Its folder (absolute).
    pub dir: PathBuf,
    /// Its name (the folder's).
    pub name: String,
    /// Its `mcp.json` entry.
    pub entry: Value,
}

/// Checks a tool's folder name: 1 to 64 characters, letters (any script), digits, `_`,
/// `-` and `.`, not starting with `.` (SPEC §6: no `/`, `..` or NUL in names used as
/// paths).
///
/// # Errors
/// [`Error::InvalidTool`], naming the rule.
pub fn validate_folder_name(name: &str) -> Result<()> {
    // The folder name is also the server name in mcp.json: its rules (128 bytes) apply.
    let ok = mag_common::config::validate_server_name(name).is_ok()
        && name.chars().count() <= 64
        && !name.starts_with('.')
        && !name.contains("..")
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidTool(format!(
            "folder_name {name:?} must be 1 to 64 letters, digits, '_', '-' or '.' (at \
             most 128 bytes), and may not start with '.' or contain '..'"
        )))
    }
}

/// A script file's path inside the tool's folder: relative, plain components only.
fn script_path(name: &str) -> Result<PathBuf> {
    let path = Path::new(name);
    let plain = !name.is_empty()
        && !name.contains(['\0', '\\', '$'])
        && path.components().all(|c| matches!(c, Component::Normal(_)))
        && !path
            .components()
            .any(|c| c.as_os_str().to_string_lossy().starts_with('.'));
    if plain && name.len() <= 255 {
        if INSTALLER_FILES.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(Error::InvalidTool(format!(
                "script file name {name:?} is written by the installer"
            )));
        }
        Ok(path.to_path_buf())
    } else {
        Err(Error::InvalidTool(format!(
            "script file name {name:?} must be a relative path of plain names (no '..', no \
             leading '/', no hidden files, no '$')"
        )))
    }
}

/// The requirements of `dependencies`: split on white space (MAG's rule), so one
/// requirement holds no spaces (`mcp>=2,<3`, `httpx[http2]==0.28.1`). Refused: an option
/// (a word starting with `-`, e.g. `--index-url`: requirements name packages) and `$`
/// (pip expands `${VAR}` in requirements files, which would hand the daemon's environment
/// to whatever URL the model wrote).
///
/// # Errors
/// [`Error::InvalidTool`] naming the word.
pub fn requirements(dependencies: &str) -> Result<Vec<String>> {
    let words: Vec<String> = dependencies.split_whitespace().map(str::to_owned).collect();
    if let Some(word) = words.iter().find(|w| w.starts_with('-') || w.contains('$')) {
        return Err(Error::InvalidTool(format!(
            "dependencies may only name packages (no options, no $VARIABLES): {word:?}"
        )));
    }
    Ok(words)
}

/// The files the installer writes itself; a script file may not take their names.
const INSTALLER_FILES: [&str; 3] = ["readme.md", "requirements.txt", INSTALLING_MARKER];

/// Present in a tool's folder while it is being installed: a folder that still has it
/// after a crash is settled at the next start ([`Toolsmith::sweep`]).
pub const INSTALLING_MARKER: &str = ".installing";

/// A reserved tool folder: removed when dropped before [`Reservation::registering`], so an
/// install that fails or is dropped half-way leaves nothing. From `registering` on (the
/// `mcp.json` write may land even if the install is dropped) a drop leaves the folder and
/// its marker to the next start's [`Toolsmith::sweep`], which keeps it if `mcp.json` lists
/// it; [`Reservation::settle`] ends it either way.
pub struct Reservation<'a> {
    smith: &'a Toolsmith,
    /// The folder's (and server's) name.
    pub name: String,
    state: Held,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Held {
    Building,
    Registering,
    Settled,
}

impl Reservation<'_> {
    /// The `mcp.json` write is about to start.
    pub fn registering(&mut self) {
        self.state = Held::Registering;
    }

    /// The write is over: with `registered`, the folder stays and its marker goes; else
    /// the folder goes.
    pub fn settle(mut self, registered: bool) {
        self.state = Held::Settled;
        if registered {
            let _ = std::fs::remove_file(self.smith.dir_of(&self.name).join(INSTALLING_MARKER));
        } else {
            self.smith.discard(&self.name);
        }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        match self.state {
            Held::Building => self.smith.discard(&self.name),
            Held::Registering => tracing::warn!(
                tool = %self.name,
                "install dropped while it was being registered; the next start keeps the \
                 folder if mcp.json lists it"
            ),
            Held::Settled => {}
        }
    }
}

impl ToolFiles {
    /// Checks every name and the dependencies before anything touches the disk.
    ///
    /// # Errors
    /// [`Error::InvalidTool`].
    pub fn check(&self) -> Result<()> {
        validate_folder_name(&self.folder_name)?;
        if self.script_files.is_empty() {
            return Err(Error::InvalidTool("script_files is empty".into()));
        }
        for (name, text) in &self.script_files {
            script_path(name)?;
            if !text.is_string() {
                return Err(Error::InvalidTool(format!(
                    "script file {name:?} must be text"
                )));
            }
        }
        requirements(&self.dependencies)?;
        Ok(())
    }

    /// The script started by the entry: the first of `main.py` (what the system prompt
    /// names as the entry point), `main_server.py`, `server.py`, else the first `.py` by
    /// name.
    pub fn main_script(&self) -> Option<String> {
        ["main.py", "main_server.py", "server.py"]
            .into_iter()
            .find(|name| self.script_files.contains_key(*name))
            .map(str::to_owned)
            .or_else(|| {
                let mut py: Vec<&String> = self
                    .script_files
                    .keys()
                    .filter(|k| k.ends_with(".py"))
                    .collect();
                py.sort();
                py.first().map(|s| (*s).clone())
            })
    }
}

impl Toolsmith {
    /// Names of the tool folders, sorted (`GET /api/mcp/ai-tools`, MAG's answer); folders
    /// still being installed are left out.
    ///
    /// # Errors
    /// [`Error::Io`] when the tools dir exists but cannot be read.
    pub fn list(&self) -> Result<Vec<String>> {
        let entries = match std::fs::read_dir(&self.tools_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(Error::Io {
                    context: format!("cannot read {}", self.tools_dir.display()),
                    source,
                });
            }
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter(|e| !e.path().join(INSTALLING_MARKER).exists())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Settles the installs that a crash interrupted (folders still holding
    /// [`INSTALLING_MARKER`]); run at start, before any install. One that `servers`
    /// (`mcp.json`'s `mcpServers`) lists as an `ai_generated` server was registered: it
    /// stays and loses its marker; any other is removed. Folders a [`Self::discard`] did not
    /// finish deleting go too.
    pub fn sweep(&self, servers: &Map<String, Value>) {
        let Ok(entries) = std::fs::read_dir(&self.tools_dir) else {
            return;
        };
        for entry in entries.filter_map(|e| e.ok()) {
            let marker = entry.path().join(INSTALLING_MARKER);
            let Some(name) = entry.file_name().into_string().ok() else {
                continue;
            };
            if name.starts_with(DISCARDED_PREFIX) {
                remove_tree(entry.path());
                continue;
            }
            if !marker.exists() {
                continue;
            }
            if servers
                .get(&name)
                .is_some_and(|e| e["ai_generated"] == true)
            {
                tracing::info!(tool = name, "keeping a tool registered just before a crash");
                let _ = std::fs::remove_file(&marker);
            } else {
                tracing::warn!(tool = name, "removing a tool whose install was interrupted");
                self.discard(&name);
            }
        }
    }

    /// The folder of tool `name`.
    pub fn dir_of(&self, name: &str) -> PathBuf {
        self.tools_dir.join(name)
    }

    /// Reserves the tool's folder: `folder_name` itself, or with `unique` the first free of
    /// `NAME`, `NAME_1`, `NAME_2`, … that is neither a folder nor in `taken` (the servers of
    /// `mcp.json`).
    ///
    /// The folder holds [`INSTALLING_MARKER`] until the reservation is settled as
    /// registered.
    ///
    /// # Errors
    /// [`Error::ToolExists`] (without `unique`), [`Error::InvalidTool`] (a `NAME_N` too
    /// long for a server name), [`Error::Io`].
    pub fn reserve(
        &self,
        folder_name: &str,
        unique: bool,
        taken: &[String],
    ) -> Result<Reservation<'_>> {
        let io = |context: String| move |source| Error::Io { context, source };
        std::fs::create_dir_all(&self.tools_dir)
            .map_err(io(format!("cannot create {}", self.tools_dir.display())))?;
        for n in 0..1000 {
            let name = match n {
                0 => folder_name.to_owned(),
                n => format!("{folder_name}_{n}"),
            };
            // `NAME_N` may pass mcp.json's 128-byte limit where `NAME` did not: said now,
            // not after pip. (Only that rule: the suffix may take it past 64 characters.)
            mag_common::config::validate_server_name(&name).map_err(Error::InvalidTool)?;
            if taken.contains(&name) {
                if unique {
                    continue;
                }
                return Err(Error::ToolExists(name));
            }
            match std::fs::create_dir(self.dir_of(&name)) {
                Ok(()) => {
                    let reservation = Reservation {
                        smith: self,
                        name,
                        state: Held::Building,
                    };
                    let marker = self.dir_of(&reservation.name).join(INSTALLING_MARKER);
                    std::fs::write(&marker, b"").map_err(|source| Error::Io {
                        context: format!("cannot write {}", marker.display()),
                        source,
                    })?;
                    return Ok(reservation);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if !unique {
                        return Err(Error::ToolExists(name));
                    }
                }
                Err(source) => {
                    return Err(Error::Io {
                        context: format!("cannot create {}", self.dir_of(&name).display()),
                        source,
                    });
                }
            }
        }
        Err(Error::ToolExists(folder_name.to_owned()))
    }

    /// Writes the files into the reserved folder `name`, creates `.venv` and installs the
    /// dependencies; answers the `mcp.json` entry. On failure the caller drops the
    /// [`Reservation`], which removes the folder.
    ///
    /// # Errors
    /// [`Error::InvalidTool`] (no Python script), [`Error::ToolInstall`] naming the step
    /// and the end of the installer's output, [`Error::Io`].
    pub async fn build(&self, name: &str, files: &ToolFiles) -> Result<BuiltTool> {
        let main = files
            .main_script()
            .ok_or_else(|| Error::InvalidTool("no .py script to start".into()))?;
        let dir = std::path::absolute(self.dir_of(name)).map_err(|source| Error::Io {
            context: "cannot resolve the tools dir".into(),
            source,
        })?;
        let mut writes = Vec::with_capacity(files.script_files.len() + 2);
        for (file, text) in &files.script_files {
            let text = text.as_str().unwrap_or_default().to_owned();
            writes.push((dir.join(script_path(file)?), text));
        }
        writes.push((dir.join("README.md"), files.readme.clone()));
        let requirements = requirements(&files.dependencies)?;
        let req_file = dir.join("requirements.txt");
        let mut req_text = requirements.join("\n");
        req_text.push('\n');
        writes.push((req_file.clone(), req_text));
        // Not bounded: a write that is answered as failed must not land later.
        let log_dir = self.log_dir.clone();
        tokio::task::spawn_blocking(move || write_files(&writes, &log_dir))
            .await
            .map_err(|e| Error::Io {
                context: "the tool's file writer failed".into(),
                source: std::io::Error::other(e),
            })??;
        let log_path = self.log_dir.join(format!("{name}.install.log"));
        let venv = dir.join(".venv");
        let mut create = Command::new(&self.python);
        create.arg("-m").arg("venv").arg(&venv);
        step::run(
            "create the virtual environment",
            create,
            &dir,
            &log_path,
            VENV_TIMEOUT,
        )
        .await?;
        let python = venv.join("bin/python");
        if !requirements.is_empty() {
            let mut install = Command::new(&python);
            install
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--disable-pip-version-check",
                    "--no-input",
                ])
                .arg("-r")
                .arg(&req_file);
            step::run(
                "install the dependencies",
                install,
                &dir,
                &log_path,
                PIP_TIMEOUT,
            )
            .await?;
        }
        let entry = json!({
            "command": python,
            "args": [dir.join(&main)],
            "cwd": dir,
            "transportType": "stdio",
            "ai_generated": true,
            "autoApprove": [],
            "disabled": false,
            "timeout": 60,
        });
        Ok(BuiltTool {
            dir,
            name: name.to_owned(),
            entry,
        })
    }

    /// Removes a tool's folder (a failed install, or a removed `ai_generated` server).
    ///
    /// The folder is first renamed to a hidden `.discarded-NAME-RANDOM` in the tools dir
    /// (one quick call: the name is free again at once, and [`Self::list`] no longer shows
    /// it); deleting it with its `.venv` then runs on tokio's blocking pool when called
    /// within the runtime, in place otherwise. A deletion cut short (mag-server stopped) is
    /// finished by the next start's [`Self::sweep`].
    pub fn discard(&self, name: &str) {
        let dir = self.dir_of(name);
        let doomed = self.tools_dir.join(format!(
            "{DISCARDED_PREFIX}{name}-{:016x}",
            rand::random::<u64>()
        ));
        match std::fs::rename(&dir, &doomed) {
            Ok(()) => remove_tree(doomed),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::debug!("cannot rename {}: {e}; removing it in place", dir.display());
                remove_tree(dir);
            }
        }
    }
}

/// The name prefix of a tool folder being deleted (see [`Toolsmith::discard`]); hidden, so
/// never a tool's name.
const DISCARDED_PREFIX: &str = ".discarded-";

/// Deletes folder `dir` and everything in it: on tokio's blocking pool when called within
/// the runtime (not awaited), else here. A failure is logged.
fn remove_tree(dir: PathBuf) {
    let remove = move || {
        if let Err(e) = std::fs::remove_dir_all(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("cannot remove {}: {e}", dir.display());
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn_blocking(remove)),
        Err(_) => remove(),
    }
}

/// Writes each `(path, text)`, creating its folders, then creates `log_dir`. Blocking.
///
/// # Errors
/// [`Error::Io`] naming the path.
fn write_files(writes: &[(PathBuf, String)], log_dir: &Path) -> Result<()> {
    let io = |path: &Path| {
        let context = format!("cannot write {}", path.display());
        move |source| Error::Io { context, source }
    };
    for (path, text) in writes {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(path))?;
        }
        std::fs::write(path, text).map_err(io(path))?;
    }
    std::fs::create_dir_all(log_dir).map_err(io(log_dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toolsmith whose tools and logs live in `dir`.
    fn smith_in(dir: &tempfile::TempDir) -> Toolsmith {
        Toolsmith {
            tools_dir: dir.path().join("tools"),
            log_dir: dir.path().join("logs"),
            python: "python3".into(),
        }
    }

    #[test]
    fn names_used_as_paths_are_checked() {
        for good in ["clock", "weather_lookup-2", "时钟", "v1.2"] {
            validate_folder_name(good).unwrap();
        }
        for bad in [
            "",
            ".hidden",
            "a/b",
            "..",
            "a..b",
            "a b",
            "a\0b",
            &"x".repeat(65),
            // 43 characters of 3 bytes: over mcp.json's 128-byte server names.
            &"时".repeat(43),
        ] {
            assert!(validate_folder_name(bad).is_err(), "{bad:?}");
        }
        for good in ["main.py", "lib/util.py"] {
            script_path(good).unwrap();
        }
        for bad in [
            "/etc/passwd",
            "../x.py",
            "a/../../x",
            ".env",
            "a\\b",
            "",
            "${MAG_API_TOKEN}.py",
        ] {
            assert!(script_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn main_py_is_the_entry_point_when_present() {
        let files = |names: &[&str]| ToolFiles {
            folder_name: "t".into(),
            script_files: names.iter().map(|n| (n.to_string(), json!(""))).collect(),
            readme: String::new(),
            dependencies: String::new(),
        };
        let main = |names: &[&str]| files(names).main_script();
        assert_eq!(main(&["server.py", "main.py"]).as_deref(), Some("main.py"));
        assert_eq!(
            main(&["server.py", "util.py"]).as_deref(),
            Some("server.py")
        );
        assert_eq!(main(&["b.py", "a.py", "x.txt"]).as_deref(), Some("a.py"));
        assert_eq!(main(&["x.txt"]), None);
    }

    #[test]
    fn dependencies_name_packages_only() {
        assert_eq!(
            requirements("mcp>=2,<3  httpx[http2]\ntzdata").unwrap(),
            ["mcp>=2,<3", "httpx[http2]", "tzdata"]
        );
        assert!(requirements("mcp --index-url http://evil").is_err());
        assert!(requirements("https://x.example/${MAG_API_TOKEN}/p.whl").is_err());
        assert!(script_path("README.md").is_err() && script_path("requirements.txt").is_err());
    }

    #[test]
    fn unique_names_skip_folders_and_servers() {
        let dir = tempfile::tempdir().unwrap();
        let smith = smith_in(&dir);
        smith.reserve("t", false, &[]).unwrap().settle(true);
        assert!(matches!(
            smith.reserve("t", false, &[]),
            Err(Error::ToolExists(_))
        ));
        let long = format!("{}ab", "时".repeat(42)); // 128 bytes: fits; `_1` would not
        smith.reserve(&long, false, &[]).unwrap().settle(true);
        assert!(matches!(
            smith.reserve(&long, true, &[]),
            Err(Error::InvalidTool(_))
        ));
        smith.discard(&long);
        let longest = "x".repeat(64);
        smith.reserve(&longest, false, &[]).unwrap().settle(true);
        let next = smith.reserve(&longest, true, &[]).unwrap();
        assert_eq!(next.name, format!("{longest}_1"));
        drop(next);
        smith.discard(&longest);
        let second = smith.reserve("t", true, &["t_1".into()]).unwrap();
        assert_eq!(second.name, "t_2");
        assert_eq!(
            smith.list().unwrap(),
            ["t"],
            "an install in progress is not listed"
        );
        drop(second);
        assert!(
            !smith.dir_of("t_2").exists(),
            "a dropped reservation leaves nothing"
        );
        let unregistered = smith.reserve("u", false, &[]).unwrap();
        std::mem::forget(unregistered);
        let mut registered = smith.reserve("v", false, &[]).unwrap();
        registered.registering();
        drop(registered);
        assert!(smith.dir_of("v").exists(), "left to the sweep");
        let mut servers = Map::new();
        servers.insert("v".into(), json!({"ai_generated": true}));
        servers.insert("u".into(), json!({"command": "x"}));
        smith.sweep(&servers);
        assert!(
            !smith.dir_of("u").exists(),
            "the sweep removes interrupted installs"
        );
        assert_eq!(
            smith.list().unwrap(),
            ["t", "v"],
            "and keeps one mcp.json lists"
        );
        smith.discard("v");
        smith.discard("t");
        assert!(smith.list().unwrap().is_empty());
    }

    /// Every entry of the tools dir.
    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn a_discarded_folder_frees_its_name_at_once_and_goes_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let smith = smith_in(&dir);
        smith.reserve("t", false, &[]).unwrap().settle(true);
        let venv = smith.dir_of("t").join(".venv/lib/site-packages/pkg");
        std::fs::create_dir_all(&venv).unwrap();
        std::fs::write(venv.join("mod.py"), "x = 1").unwrap();
        smith.discard("t");
        assert!(!smith.dir_of("t").exists());
        assert!(smith.list().unwrap().is_empty());
        // The name can be taken again before the old folder is gone.
        smith.reserve("t", false, &[]).unwrap().settle(true);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while entries(&smith.tools_dir) != ["t"] {
            assert!(std::time::Instant::now() < deadline, "the old folder stays");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        smith.discard("nothing-there");
    }

    #[test]
    fn the_sweep_finishes_deletions_cut_short() {
        let dir = tempfile::tempdir().unwrap();
        let smith = smith_in(&dir);
        let left = smith.tools_dir.join(".discarded-t-00000000000000ff");
        std::fs::create_dir_all(left.join(".venv")).unwrap();
        std::fs::write(left.join(INSTALLING_MARKER), b"").unwrap();
        smith.reserve("kept", false, &[]).unwrap().settle(true);
        smith.sweep(&Map::new());
        assert_eq!(entries(&smith.tools_dir), ["kept"]);
    }
}
