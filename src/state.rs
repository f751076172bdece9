//! The shared state of a running server: the store and the settings. Cloned
//! into every service; everything in it is cheap to clone.

use std::sync::Arc;

use crate::{config::Settings, store::Store};

/// What every request handler shares.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The database.
    pub store: Store,
    /// Request-path settings.
    pub settings: Arc<Settings>,
}

impl AppState {
    /// Bundles a store and settings.
    pub fn new(store: Store, settings: Settings) -> Self {
        Self {
            store,
            settings: Arc::new(settings),
        }
    }
}
