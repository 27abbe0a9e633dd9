//! Pull metrics, registered into the daemon's Prometheus registry.

use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry};

use crate::Error;

/// From a cached pull (tens of ms) to a large image over a slow link.
const PULL_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

#[derive(Clone)]
pub(crate) struct PullMetrics {
    pulls: IntCounterVec,
    duration: HistogramVec,
    pub(crate) bytes: IntCounter,
    pub(crate) blobs_fetched: IntCounter,
    pub(crate) blobs_reused: IntCounter,
}

impl PullMetrics {
    pub(crate) fn register(registry: &Registry) -> Result<Self, Error> {
        let pulls = IntCounterVec::new(
            Opts::new(
                "carapace_image_pulls_total",
                "Image pulls finished, by outcome (success or the error kind).",
            ),
            &["outcome"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "carapace_image_pull_duration_seconds",
                "Time from a pull's start to its image being stored, by outcome.",
            )
            .buckets(PULL_BUCKETS.to_vec()),
            &["outcome"],
        )?;
        let bytes = IntCounter::new(
            "carapace_image_pull_bytes_total",
            "Bytes of blobs (configs and layers) downloaded from registries.",
        )?;
        let blobs_fetched = IntCounter::new(
            "carapace_image_blobs_fetched_total",
            "Blobs downloaded from registries and stored.",
        )?;
        let blobs_reused = IntCounter::new(
            "carapace_image_blobs_reused_total",
            "Blobs a pull needed that were already in the content store.",
        )?;
        registry.register(Box::new(pulls.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(bytes.clone()))?;
        registry.register(Box::new(blobs_fetched.clone()))?;
        registry.register(Box::new(blobs_reused.clone()))?;
        Ok(Self {
            pulls,
            duration,
            bytes,
            blobs_fetched,
            blobs_reused,
        })
    }

    pub(crate) fn pull_done(&self, outcome: &str, seconds: f64) {
        self.pulls.with_label_values(&[outcome]).inc();
        self.duration.with_label_values(&[outcome]).observe(seconds);
    }
}

/// A short, bounded label for an error, so outcomes do not explode the series count.
pub(crate) fn outcome(e: &Error) -> &'static str {
    match e {
        Error::InvalidReference { .. } => "invalid_reference",
        Error::ImageNotFound(_) | Error::NotFoundInRegistry { .. } => "not_found",
        Error::Unauthorized { .. } => "unauthorized",
        Error::Registry { .. } => "registry_error",
        Error::Stalled { .. } => "stalled",
        Error::Unsupported(_) => "unsupported",
        Error::Verification { .. } => "verification_failed",
        Error::Refused { .. } => "refused",
        Error::Config { .. } => "config_error",
        Error::DiskFull { .. } => "disk_full",
        Error::Io { .. } | Error::Internal(_) => "internal_error",
    }
}
