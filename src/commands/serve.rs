//! `hush serve`: the HTTP API on a model and the store.

use crate::out;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Deserialize;

use super::{load_key, open_ledger, print_json};
use crate::cli::*;

/// The `[serve]` table of a config file.
#[derive(Debug, Default, Deserialize)]
struct ServeConfigFile {
    #[serde(default)]
    serve: hush_serve::ServeConfig,
}

pub fn run(g: &Global, args: &ServeArgs) -> Result<()> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            toml::from_str::<ServeConfigFile>(&text)
                .map_err(|e| {
                    let line = e.span().map(|s| text[..s.start].matches('\n').count() + 1).unwrap_or(0);
                    anyhow::anyhow!("config {}:{line}: {}", path.display(), e.message())
                })?
                .serve
        }
        None => hush_serve::ServeConfig::default(),
    };
    if let Some(size) = args.store_pool_size {
        config.store_pool_size = size;
    }
    if let Some(n) = args.store_reader_connections {
        config.store_reader_connections = n;
    }
    let model = args
        .model
        .clone()
        .or_else(|| config.model.clone())
        .context("give the model file with --model, HUSH_MODEL or `model` in the [serve] config")?;
    let bind = args.bind.clone().or_else(|| config.bind.clone()).unwrap_or_else(|| "127.0.0.1:8080".into());
    serve_model(g, &model, &bind, None, None, config)
}

/// Serves `model` until Ctrl-C; SIGHUP reloads the model file (a bad file is refused).
/// Resolves on Ctrl-C (SIGINT) or SIGTERM, what service managers send to stop a process.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The server's async worker threads: `TOKIO_WORKER_THREADS` if set, else
/// twice the cores.
///
/// Why more workers than cores: a request is scored on the worker that
/// handles it (about 0.1 ms), and a worker scoring the requests in its queue
/// one after another leaves the socket reads and writes of other requests,
/// and the replies of the PostgreSQL reader, waiting behind them. With twice
/// as many workers the kernel shares the cores among them instead.
/// `benches/store_load.sh`'s PostgreSQL recommendations on two cores, three
/// alternating runs each: p99 37.7 / 45.3 / 41.2 ms with two workers, 18.3 /
/// 30.4 / 30.0 ms with four; SQLite-backed serving is unchanged (p99 12.1
/// against 12.6 ms).
fn serving_workers() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    std::env::var("TOKIO_WORKER_THREADS").ok().and_then(|v| v.parse().ok()).filter(|&n| n > 0).unwrap_or(2 * cores)
}

pub fn serve_model(
    g: &Global,
    model_path: &Path,
    bind: &str,
    example_key: Option<&str>,
    example_subject: Option<&str>,
    config: hush_serve::ServeConfig,
) -> Result<()> {
    let model = hush_mf::Model::load(model_path)?;
    let state = std::sync::Arc::new(
        hush_serve::AppState::new(model, open_ledger(g)?, load_key(g)?, config)?
            .with_model_path(model_path.to_path_buf()),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(serving_workers()).enable_all().build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .with_context(|| format!("binding {bind} (is another server running there?)"))?;
        let address = listener.local_addr()?;
        #[cfg(unix)]
        {
            let reloader = state.clone();
            let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
            tokio::spawn(async move {
                while hangups.recv().await.is_some() {
                    let state = reloader.clone();
                    match tokio::task::spawn_blocking(move || state.reload_model()).await {
                        Ok(Ok(id)) => eprintln!("SIGHUP: now serving model {id}"),
                        Ok(Err(e)) => eprintln!("SIGHUP: model refused, the previous one keeps serving: {e}"),
                        Err(e) => eprintln!("SIGHUP: reload failed: {e}"),
                    }
                }
            });
        }
        // A key we know is printed as it is; otherwise the shell variable,
        // in double quotes so that the shell expands it.
        let auth = match example_key {
            Some(key) => format!("-H 'Authorization: Bearer {key}'"),
            None => "-H \"Authorization: Bearer $HUSH_API_KEY\"".to_string(),
        };
        let subject = example_subject.unwrap_or("cust-0000002");
        if g.json {
            // One JSON object on stdout: logs stay on stderr, so stdout stays parseable.
            let key = example_key.unwrap_or("$HUSH_API_KEY");
            let base = format!("http://{address}");
            print_json(&serde_json::json!({
                "serving": model_path.display().to_string(),
                "model_id": state.model().model.meta.model_id,
                "address": address.to_string(),
                "base_url": base,
                "store": hush_consent::ledger::redact(&g.db),
                "api_key": example_key,
                "examples": [
                    { "method": "GET", "url": format!("{base}/v1/model"), "authorization": format!("Bearer {key}") },
                    { "method": "GET", "url": format!("{base}/v1/recommendations/popular?k=5"), "authorization": format!("Bearer {key}") },
                    { "method": "GET", "url": format!("{base}/v1/subjects/{subject}/recommendations?k=5"), "authorization": format!("Bearer {key}") },
                    { "method": "GET", "url": format!("{base}/v1/subjects/{subject}/export"), "authorization": format!("Bearer {key}") },
                    { "method": "PUT", "url": format!("{base}/v1/subjects/{subject}/consent"), "authorization": format!("Bearer {key}"),
                      "body": { "purpose": "personalization", "granted": false } },
                    { "method": "DELETE", "url": format!("{base}/v1/subjects/{subject}"), "authorization": format!("Bearer {key}") },
                ],
            }))?;
            hush_serve::serve(listener, state, shutdown_signal()).await?;
            eprintln!("stopped: the requests in flight were answered");
            return Ok(());
        }
        out!("serving {} on http://{address} (store {})", model_path.display(), hush_consent::ledger::redact(&g.db));
        out!("Ctrl-C or SIGTERM stops after the requests in flight; SIGHUP reloads the model file. Try:");
        out!("  curl {auth} http://{address}/v1/model");
        out!("  curl {auth} 'http://{address}/v1/recommendations/popular?k=5'");
        out!("  curl {auth} 'http://{address}/v1/subjects/{subject}/recommendations?k=5'");
        out!("  curl {auth} http://{address}/v1/subjects/{subject}/export");
        out!("  curl -X PUT {auth} -H 'content-type: application/json' \\");
        out!("       -d '{{\"purpose\":\"personalization\",\"granted\":false}}' \\");
        out!("       http://{address}/v1/subjects/{subject}/consent     # then recommendations answer 403");
        out!("  curl -X DELETE {auth} http://{address}/v1/subjects/{subject}");
        hush_serve::serve(listener, state, shutdown_signal()).await?;
        eprintln!("stopped: the requests in flight were answered");
        Ok(())
    })
}
