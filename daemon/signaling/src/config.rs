//! Driver selection from configuration.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::Sender;

use crate::{
    Driver, DriverError, DriverEvent, LocalConfig, LocalDriver, MemoryDriver, MemoryHub,
    NatsConfig, NatsDriver,
};

/// Which signaling driver to use, tagged by `kind`
/// (`{"kind":"local","dir":...}`, `{"kind":"nats","servers":[...]}`, `{"kind":"memory"}`).
// Built once per daemon config load, so the size difference is irrelevant and
// boxing would only make construction and matching clumsier for callers.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum DriverConfig {
    /// In-process driver on [`MemoryHub::global`].
    Memory,
    /// Same-host driver (the default).
    Local(LocalConfig),
    /// NATS driver.
    Nats(NatsConfig),
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig::Local(LocalConfig::default())
    }
}

/// Build the configured driver; it delivers to `events`. Must run inside a Tokio runtime.
pub async fn connect_driver(
    config: DriverConfig,
    events: Sender<DriverEvent>,
) -> Result<Arc<dyn Driver>, DriverError> {
    Ok(match config {
        DriverConfig::Memory => Arc::new(MemoryDriver::new(&MemoryHub::global(), events)),
        DriverConfig::Local(c) => local(c, events).await?,
        DriverConfig::Nats(c) => Arc::new(NatsDriver::connect(c, events).await?),
    })
}

#[cfg(unix)]
async fn local(
    config: LocalConfig,
    events: Sender<DriverEvent>,
) -> Result<Arc<dyn Driver>, DriverError> {
    Ok(Arc::new(LocalDriver::start(config, events).await?))
}

#[cfg(not(unix))]
async fn local(
    config: LocalConfig,
    events: Sender<DriverEvent>,
) -> Result<Arc<dyn Driver>, DriverError> {
    // Surfaces DriverError::NotSupported from the stub.
    match LocalDriver::start(config, events).await {
        Ok(_) => Err(DriverError::NotSupported("local")),
        Err(e) => Err(e),
    }
}
