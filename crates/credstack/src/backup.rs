//! `credstack backup` and `credstack restore` for the embedded store.
//!
//! A backup holds every write acknowledged before the command started, on a
//! running store or a stopped one, killed or not. An acknowledged write is
//! in `credstack.db` or in the journal's batches not merged yet
//! (`store::journal`), so a backup takes both, and never writes the store
//! it copies:
//!
//! 1. a read snapshot of the journal, taken first: it holds every batch
//!    committed so far that the store's mark may not cover (a batch leaves
//!    the journal only after its merge committed);
//! 2. SQLite's `VACUUM INTO` of `credstack.db`: a new file written from one
//!    read snapshot, later than the journal's, so its mark is at least as
//!    far as anything the journal's snapshot lacks;
//! 3. the snapshot's batches past the copy's mark merged into the copy, by
//!    the merger's own function, exactly once (the mark moves with them).
//!
//! The copy is written beside its destination, flushed to disk, then renamed
//! into place, so a backup cut off half way never looks like a whole one;
//! then it is verified ([`crate::verify`]) before the command reports
//! success. A restore copies a backup into a data directory that holds no
//! store yet, nor a journal (whose batches belong to another store), the
//! same way.

use crate::ledger::database_path;
use crate::store::{journal, sqlite};
use crate::verify::{self, Report};
use std::path::{Path, PathBuf};

pub struct Backup {
    /// The database file backed up.
    pub source: PathBuf,
    /// `verify` of the backup file.
    pub verified: Report,
}

/// Backs the store up to `out`, then verifies the copy, calling
/// `progress(wallets checked, wallets in all)` as it goes.
pub fn backup(
    data_dir: &Path,
    out: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Backup, String> {
    let source = database_path(data_dir);
    if !source.is_file() {
        return Err(format!("no credstack store at {}", source.display()));
    }
    if out.exists() {
        return Err(format!(
            "{} exists already: a backup never overwrites a file",
            out.display()
        ));
    }
    let partial = with_suffix(out, ".partial");
    remove_if_present(&partial)?;
    // First the journal's snapshot, then the store's: see the module's doc.
    let tail = journal::snapshot(&journal::path(data_dir))?;
    let connection =
        sqlite::open(&source).map_err(|e| format!("cannot open {}: {e}", source.display()))?;
    let target = partial
        .to_str()
        .ok_or_else(|| format!("{} is not a UTF-8 path", partial.display()))?;
    connection
        .execute("VACUUM INTO ?1", [target])
        .map_err(|e| format!("cannot write {}: {e}", partial.display()))?;
    drop(connection);
    if let Some(tail) = &tail {
        merge_tail(&partial, tail)?;
    }
    put_in_place(&partial, out)?;
    let verified = verify_file(out, progress)?;
    if !verified.is_clean() {
        return Err(format!(
            "the backup at {} does not verify:\n{verified}",
            out.display()
        ));
    }
    Ok(Backup { source, verified })
}

/// Copies a backup in as the store of `data_dir`, which must hold none.
/// Returns the store's path.
pub fn restore(backup: &Path, data_dir: &Path) -> Result<PathBuf, String> {
    if !backup.is_file() {
        return Err(format!("no backup file at {}", backup.display()));
    }
    let target = database_path(data_dir);
    // A journal left by another store would be merged into this one.
    let files = [target.clone(), journal::path(data_dir)];
    for existing in files.iter().flat_map(|file| {
        [
            file.clone(),
            with_suffix(file, "-wal"),
            with_suffix(file, "-shm"),
        ]
    }) {
        if existing.exists() {
            return Err(format!(
                "{} exists: restore into a data directory without a store",
                existing.display()
            ));
        }
    }
    std::fs::create_dir_all(data_dir)
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let partial = with_suffix(&target, ".partial");
    std::fs::copy(backup, &partial)
        .map_err(|e| format!("cannot copy {}: {e}", backup.display()))?;
    put_in_place(&partial, &target)?;
    Ok(target)
}

/// Merges the journal snapshot's batches past the copy's mark into the copy,
/// which then stands alone: a rollback-journal file with nothing beside it.
fn merge_tail(copy: &Path, tail: &rusqlite::Connection) -> Result<(), String> {
    let cannot = |e: &dyn std::fmt::Display| format!("cannot write {}: {e}", copy.display());
    let connection = rusqlite::Connection::open(copy).map_err(|e| cannot(&e))?;
    let configured = (|| {
        connection.pragma_update(None, "journal_mode", "DELETE")?;
        connection.pragma_update(None, "synchronous", "FULL")?;
        // As the merger: the rows come from wallets the writer had loaded.
        connection.pragma_update(None, "foreign_keys", false)
    })();
    configured.map_err(|e| cannot(&e))?;
    journal::merge_all(&connection, tail, |_| {}).map_err(|e| cannot(&e))?;
    connection.close().map_err(|(_, e)| cannot(&e))
}

fn verify_file(path: &Path, progress: &mut dyn FnMut(u64, u64)) -> Result<Report, String> {
    let mut connection =
        sqlite::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    verify::verify_with_progress(&mut connection, progress)
        .map_err(|e| format!("cannot verify {}: {e}", path.display()))
}

/// Flushes `partial` to disk and renames it to `path`, then flushes the
/// directory so the rename itself survives a crash.
fn put_in_place(partial: &Path, path: &Path) -> Result<(), String> {
    let sync = |p: &Path| std::fs::File::open(p).and_then(|f| f.sync_all());
    sync(partial).map_err(|e| format!("cannot flush {}: {e}", partial.display()))?;
    std::fs::rename(partial, path)
        .map_err(|e| format!("cannot rename {} into place: {e}", partial.display()))?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync(parent).map_err(|e| format!("cannot flush {}: {e}", parent.display()))?;
    }
    Ok(())
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn remove_if_present(path: &Path) -> Result<(), String> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(format!("cannot remove {}: {e}", path.display()))
        }
        _ => Ok(()),
    }
}
