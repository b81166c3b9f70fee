//! One module per subcommand.

pub mod access;
#[cfg(feature = "hub")]
pub mod bench;
pub mod campaign;
#[cfg(feature = "hub")]
pub mod demo;
#[cfg(feature = "edge")]
pub mod edge;
#[cfg(feature = "hub")]
pub mod hub;
pub mod model;
pub mod registry;
pub mod release;
#[cfg(feature = "hub")]
pub mod simulate;

/// Resolves on Ctrl-C or SIGTERM.
pub async fn wait_for_stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
