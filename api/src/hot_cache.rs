//! What an invocation would otherwise ask Postgres for on every call: the caller's key and the
//! function's route. Entries are dropped when Postgres announces a change (the triggers of
//! migration `notify_route_and_key_changes`, on the channels `slipway_routes` and
//! `slipway_keys`), so a deploy, a rollback, an idle stop or a revoked key takes effect on the
//! next call, as without the cache.
//!
//! The cache is used only while its listener is connected: when the connection drops, every
//! entry is forgotten and calls go to the database until it is back, since a change made
//! meanwhile would never be announced. A lookup that raced a change (it read the database before
//! the change and would store the old answer after it) is not stored: every announcement moves a
//! generation, and an answer read under an older generation is served once and not kept.

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use slipway_shared::db::{aliases::QualifiedRoute, deployments::Route, users::KeyOwner};
use sqlx::{PgPool, postgres::PgListener};
use uuid::Uuid;

const ROUTES_CHANNEL: &str = "slipway_routes";
const KEYS_CHANNEL: &str = "slipway_keys";
/// Past this many entries a table is emptied rather than grown: a bound on memory that costs
/// one database read per entry afterwards.
const MAX_ENTRIES: usize = 100_000;

#[derive(Default)]
pub struct HotCache {
    /// The listener is connected: entries can be trusted and stored.
    live: AtomicBool,
    /// Moves on every announcement and every reconnection.
    generation: AtomicU64,
    /// `(owner, function)` → a route that was ready to serve when read.
    routes: RwLock<HashMap<(Uuid, Uuid), Arc<Route>>>,
    /// `(owner, function, qualifier)` → the route of `{id}@{qualifier}` (an alias or a version),
    /// kept while it leads to the active version or to a ready version instance.
    qualified: RwLock<HashMap<(Uuid, Uuid, String), Arc<QualifiedRoute>>>,
    /// SHA-256 of a bearer key → its live owner.
    keys: RwLock<HashMap<[u8; 32], KeyOwner>>,
}

/// Taken before a database read, handed back to store its answer.
#[derive(Clone, Copy)]
pub struct Ticket(Option<u64>);

impl HotCache {
    /// Starts the listener that keeps the cache true; until it connects, nothing is cached.
    pub fn start(pool: PgPool) -> Arc<Self> {
        let cache = Arc::new(Self::default());
        tokio::spawn(listen(pool, Arc::clone(&cache)));
        cache
    }

    pub fn ticket(&self) -> Ticket {
        Ticket(
            self.live
                .load(Ordering::Acquire)
                .then(|| self.generation.load(Ordering::Acquire)),
        )
    }

    pub fn cached_route(&self, owner: Uuid, function: Uuid) -> Option<Arc<Route>> {
        if !self.live.load(Ordering::Acquire) {
            return None;
        }
        read(&self.routes).get(&(owner, function)).cloned()
    }

    pub fn store_route(&self, ticket: Ticket, owner: Uuid, function: Uuid, route: Arc<Route>) {
        self.store(ticket, &self.routes, (owner, function), route);
    }

    pub fn cached_qualified(
        &self,
        owner: Uuid,
        function: Uuid,
        qualifier: &str,
    ) -> Option<Arc<QualifiedRoute>> {
        if !self.live.load(Ordering::Acquire) {
            return None;
        }
        read(&self.qualified)
            .get(&(owner, function, qualifier.to_owned()))
            .cloned()
    }

    pub fn store_qualified(
        &self,
        ticket: Ticket,
        owner: Uuid,
        function: Uuid,
        qualifier: &str,
        route: Arc<QualifiedRoute>,
    ) {
        self.store(
            ticket,
            &self.qualified,
            (owner, function, qualifier.to_owned()),
            route,
        );
    }

    pub fn key(&self, hash: &[u8; 32]) -> Option<KeyOwner> {
        if !self.live.load(Ordering::Acquire) {
            return None;
        }
        read(&self.keys).get(hash).cloned()
    }

    pub fn store_key(&self, ticket: Ticket, hash: [u8; 32], owner: KeyOwner) {
        self.store(ticket, &self.keys, hash, owner);
    }

    fn store<K: std::hash::Hash + Eq, V>(
        &self,
        Ticket(generation): Ticket,
        table: &RwLock<HashMap<K, V>>,
        key: K,
        value: V,
    ) {
        let Some(generation) = generation else {
            return;
        };
        let mut table = table
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Checked under the write lock: `forget` takes the same lock after moving the
        // generation, so nothing read before an announcement lands after it.
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if table.len() >= MAX_ENTRIES {
            table.clear();
        }
        table.insert(key, value);
    }

    /// For a change this process made: its next call must not wait for the announcement.
    pub fn forget_function(&self, function: Uuid) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        write(&self.routes).retain(|(_, id), _| *id != function);
        write(&self.qualified).retain(|(_, id, _), _| *id != function);
    }

    /// Drops the caller's route to `function` alone: the instance it leads to refused a
    /// connection, so the switch that moved it may not have been announced yet. Removing one
    /// entry keeps a function that keeps refusing from sweeping everyone's cache on every call;
    /// the generation moves, as for an announcement, so a lookup that read the old route
    /// before the switch does not store it again.
    pub fn forget_route(&self, owner: Uuid, function: Uuid) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        write(&self.routes).remove(&(owner, function));
    }

    pub fn forget_keys(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        write(&self.keys).clear();
    }

    /// An announcement that names no function: forget every route.
    fn forget_routes(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        write(&self.routes).clear();
        write(&self.qualified).clear();
    }

    fn forget_all(&self) {
        self.live.store(false, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
        write(&self.routes).clear();
        write(&self.qualified).clear();
        write(&self.keys).clear();
    }
}

fn read<K, V>(table: &RwLock<HashMap<K, V>>) -> std::sync::RwLockReadGuard<'_, HashMap<K, V>> {
    table
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<K, V>(table: &RwLock<HashMap<K, V>>) -> std::sync::RwLockWriteGuard<'_, HashMap<K, V>> {
    table
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Listens until the pool is closed (the process stops); a lost connection empties the cache
/// and is reconnected after a pause.
async fn listen(pool: PgPool, cache: Arc<HotCache>) {
    loop {
        let result = listen_once(&pool, &cache).await;
        cache.forget_all();
        if pool.is_closed() {
            return;
        }
        if let Err(error) = result {
            tracing::warn!(%error, "the cache's listener lost Postgres; invocations read the database until it is back");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn listen_once(pool: &PgPool, cache: &HotCache) -> sqlx::Result<()> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen_all([ROUTES_CHANNEL, KEYS_CHANNEL]).await?;
    // Anything changed before LISTEN took effect was not announced to us: start empty.
    cache.forget_all();
    cache.live.store(true, Ordering::Release);
    loop {
        // `None`: the connection was lost (and is being re-established); announcements may have
        // been missed in between.
        let Some(notification) = listener.try_recv().await? else {
            return Ok(());
        };
        match notification.channel() {
            ROUTES_CHANNEL => match notification.payload().parse() {
                Ok(function) => cache.forget_function(function),
                Err(_) => cache.forget_routes(),
            },
            _ => cache.forget_keys(),
        }
    }
}
