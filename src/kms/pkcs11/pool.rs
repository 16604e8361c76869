//! The PKCS#11 module registry and the session pool of one provider.
//!
//! A module (shared library) is loaded and initialised once per process and path, then
//! shared; every provider keeps a small pool of logged-in sessions on it. Re-initialising
//! the module (C_Finalize + C_Initialize) bumps its generation, and sessions of an older
//! generation are dropped without C_CloseSession.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::Session;
use parking_lot::{Mutex, RwLock};

use super::classify::Fail;
use crate::kms::ErrorKind;

/// Idle sessions kept per provider; more concurrent calls open more, closed when returned.
const POOL_MAX: usize = 8;

/// How long a re-initialisation waits for calls in flight on other threads.
const REINIT_WAIT: Duration = Duration::from_secs(10);

/// A loaded PKCS#11 module, shared by every provider of this process naming the same path.
pub(super) struct Module {
    path: PathBuf,
    /// The library, once loaded and initialised. Calls hold the read lock while they use a
    /// session; re-initialisation takes the write lock so that no session handle is in use
    /// while the library forgets them all.
    ctx: RwLock<Option<Pkcs11>>,
    /// Bumped by every (re-)initialisation. Sessions of an older generation are dead: they are
    /// dropped without C_CloseSession, whose handle number may already belong to a new session.
    generation: AtomicU64,
}

/// The module loaded from `path`, shared process-wide.
///
/// `MODULES` is the one process-wide registry cmkfs keeps on purpose: PKCS#11 makes
/// C_Initialize and C_Finalize per *process* (a second C_Initialize answers
/// CKR_CRYPTOKI_ALREADY_INITIALIZED, a C_Finalize invalidates every session of every
/// caller), so every provider naming the same module must share one [`Module`] and its
/// generation counter instead of each initialising the library on its own.
fn module(path: &Path) -> Arc<Module> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Arc<Module>>>> = OnceLock::new();
    MODULES
        .get_or_init(Default::default)
        .lock()
        .entry(path.to_path_buf())
        .or_insert_with(|| {
            Arc::new(Module {
                path: path.to_path_buf(),
                ctx: RwLock::new(None),
                generation: AtomicU64::new(0),
            })
        })
        .clone()
}

impl Module {
    /// The generation of the library state; sessions of another generation are dead.
    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Loads and initialises the library (under the write lock) if that is not done yet.
    pub(super) fn ensure(&self) -> Result<(), Fail> {
        if self.ctx.read().is_some() {
            return Ok(());
        }
        let mut w = self
            .ctx
            .try_write_for(REINIT_WAIT)
            .ok_or_else(|| Fail::plain(ErrorKind::Unreachable, "PKCS#11 module busy (a call is hanging)"))?;
        if w.is_none() {
            *w = Some(self.load()?);
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }

    fn load(&self) -> Result<Pkcs11, Fail> {
        let ctx = Pkcs11::new(&self.path).map_err(|e| Fail::ck("loading the module", e))?;
        match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(ctx),
            Err(e) => Err(Fail::ck("C_Initialize", e)),
        }
    }

    /// C_Finalize + C_Initialize, unless another thread did it since `seen` (a generation).
    pub(super) fn reinit(&self, seen: u64) -> Result<(), Fail> {
        let mut w = self
            .ctx
            .try_write_for(REINIT_WAIT)
            .ok_or_else(|| Fail::plain(ErrorKind::Unreachable, "PKCS#11 module busy (a call is hanging)"))?;
        if self.generation.load(Ordering::SeqCst) != seen && w.is_some() {
            return Ok(());
        }
        tracing::info!(module = %self.path.display(), "re-initialising the PKCS#11 module");
        if let Some(old) = w.take() {
            let _ = old.clone().finalize();
            // Keep the library loaded (same handle) and initialise it again.
            self.generation.fetch_add(1, Ordering::SeqCst);
            match old.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
                Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {
                    *w = Some(old);
                    Ok(())
                }
                Err(e) => Err(Fail::ck("C_Initialize", e)),
            }
        } else {
            *w = Some(self.load()?);
            self.generation.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }
}

/// A logged-in session with the generation of the library it belongs to.
struct Pooled {
    session: Session,
    generation: u64,
}

/// The idle logged-in sessions of one provider, on its (shared) module.
pub(super) struct Pool {
    /// The module the sessions belong to.
    pub module: Arc<Module>,
    idle: Mutex<Vec<Pooled>>,
}

impl Pool {
    /// An empty pool on the module at `path` (loaded on first use).
    pub(super) fn new(path: &Path) -> Self {
        Pool {
            module: module(path),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// One attempt of `op` with a pooled session, or a new one from `open` (which finds the
    /// token and logs in). The session goes back to the pool unless the failure says it
    /// may be dead.
    pub(super) fn attempt<T>(
        &self,
        open: &impl Fn(&Pkcs11) -> Result<Session, Fail>,
        op: &impl Fn(&Session) -> Result<T, Fail>,
    ) -> Result<T, Fail> {
        let guard = self.module.ctx.read();
        let ctx = guard
            .as_ref()
            .ok_or_else(|| Fail::plain(ErrorKind::Unreachable, "the PKCS#11 module is not initialised"))?;
        let generation = self.module.generation.load(Ordering::SeqCst);
        let pooled = loop {
            match self.idle.lock().pop() {
                Some(p) if p.generation == generation => break p,
                Some(_stale) => continue, // its library state is gone: drop without closing
                None => {
                    break Pooled {
                        session: open(ctx)?,
                        generation,
                    }
                }
            }
        };
        match op(&pooled.session) {
            Ok(v) => {
                let mut pool = self.idle.lock();
                if pool.len() < POOL_MAX {
                    pool.push(pooled);
                } else {
                    let _ = pooled.session.close();
                }
                Ok(v)
            }
            Err(f) => {
                if !f.retryable() {
                    self.idle.lock().push(pooled);
                } else {
                    let _ = pooled.session.close();
                }
                Err(f)
            }
        }
    }

    /// Closes idle sessions of the current generation, forgets older ones.
    pub(super) fn drain(&self) {
        let stale: Vec<Pooled> = std::mem::take(&mut *self.idle.lock());
        let guard = self.module.ctx.read();
        let generation = self.module.generation.load(Ordering::SeqCst);
        for p in stale {
            if guard.is_some() && p.generation == generation {
                let _ = p.session.close();
            }
            // else: a dead handle of an older library state; dropped without C_CloseSession
            // (sessions are opened with no close-on-drop).
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.drain();
    }
}
