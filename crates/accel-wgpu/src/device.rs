//! Adapters and devices: every adapter wgpu finds becomes a backend `wgpu:N`; its device is
//! created on first use, with wgpu's error and device-lost callbacks turned into state the
//! executables check, so no wgpu callback ever panics.

use crate::kernels::Kernels;
use accel_core::{DeviceInfo, Error, Result};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

/// Why there is no wgpu backend on a machine without any adapter.
pub const NO_ADAPTER: &str = "no GPU adapter found (Vulkan, Metal, DX12 or GL); install a \
    driver, e.g. Debian's mesa-vulkan-drivers and libvulkan1 for the lavapipe CPU device";

/// The process's wgpu instance and the adapters it enumerated, found once.
pub(crate) fn adapters() -> &'static [wgpu::Adapter] {
    static ADAPTERS: OnceLock<Vec<wgpu::Adapter>> = OnceLock::new();
    ADAPTERS.get_or_init(|| {
        // WGPU_BACKEND narrows the search, as in every wgpu program. Otherwise GL is only
        // asked when no Vulkan, Metal or DX12 adapter exists: the same device behind GL is a
        // duplicate (and EGL prints warnings on headless machines).
        let search = |backends: Option<wgpu::Backends>| {
            let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
            if let Some(b) = backends {
                desc.backends = b;
            }
            let instance = wgpu::Instance::new(desc);
            pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
        };
        if std::env::var_os("WGPU_BACKEND").is_some() {
            return search(None);
        }
        let found = search(Some(wgpu::Backends::PRIMARY));
        if found.is_empty() {
            search(Some(wgpu::Backends::SECONDARY))
        } else {
            found
        }
    })
}

/// What a person needs to tell adapters apart: name, backend, type, driver, limits.
pub(crate) fn device_info(adapter: &wgpu::Adapter) -> DeviceInfo {
    let info = adapter.get_info();
    let limits = adapter.limits();
    let kind = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => "discrete-gpu",
        wgpu::DeviceType::IntegratedGpu => "integrated-gpu",
        wgpu::DeviceType::VirtualGpu => "virtual-gpu",
        wgpu::DeviceType::Cpu => "cpu",
        wgpu::DeviceType::Other => "other",
    };
    let features = adapter.features();
    let named = [
        (wgpu::Features::SHADER_F16, "shader-f16"),
        (wgpu::Features::TIMESTAMP_QUERY, "timestamp-query"),
        (wgpu::Features::SUBGROUP, "subgroup"),
        (wgpu::Features::PIPELINE_CACHE, "pipeline-cache"),
    ];
    let listed: Vec<&str> = named
        .iter()
        .filter(|(f, _)| features.contains(*f))
        .map(|(_, n)| *n)
        .collect();
    DeviceInfo {
        name: format!("{} ({:?})", info.name, info.backend),
        kind: kind.into(),
        details: vec![
            ("backend".into(), format!("{:?}", info.backend)),
            (
                "driver".into(),
                format!("{} {}", info.driver, info.driver_info)
                    .trim()
                    .to_string(),
            ),
            (
                "vendor/device".into(),
                format!("{:#06x}/{:#06x}", info.vendor, info.device),
            ),
            ("features".into(), listed.join(" ")),
            (
                "max storage binding".into(),
                format!("{} MiB", limits.max_storage_buffer_binding_size >> 20),
            ),
            (
                "max workgroup".into(),
                format!(
                    "{} invocations, {} KiB shared",
                    limits.max_compute_invocations_per_workgroup,
                    limits.max_compute_workgroup_storage_size >> 10
                ),
            ),
        ],
    }
}

/// A device with its queue and compiled kernels, and what its callbacks reported.
pub(crate) struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub kernels: Kernels,
    pub limits: wgpu::Limits,
    /// Nanoseconds per timestamp tick, when the device has timestamp queries.
    pub timestamp_ns: Option<f64>,
    /// The driver's compiled pipelines, loaded from and saved to disk.
    pub pipeline_cache: Option<PipelineCache>,
    /// Errors no error scope caught (wgpu's default handler would panic on them).
    uncaptured: Arc<Mutex<Vec<String>>>,
    lost: Arc<Mutex<Option<String>>>,
}

impl Gpu {
    pub fn new(adapter: &wgpu::Adapter, label: &str) -> std::result::Result<Gpu, String> {
        let limits = adapter.limits();
        // Kernel timing where the adapter has timestamps, the f16 kernels where it has f16,
        // compiled pipelines kept on disk where it has a pipeline cache.
        let features = adapter.features()
            & (wgpu::Features::TIMESTAMP_QUERY
                | wgpu::Features::SHADER_F16
                | wgpu::Features::PIPELINE_CACHE);
        // The graphs need what the adapter has at most: bigger bindings, 8 storage buffers.
        let desc = wgpu::DeviceDescriptor {
            label: Some(label),
            required_features: features,
            required_limits: limits.clone(),
            memory_hints: wgpu::MemoryHints::Performance,
            ..Default::default()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&desc))
            .map_err(|e| format!("cannot create a device on {}: {e}", adapter.get_info().name))?;
        let uncaptured = Arc::new(Mutex::new(Vec::new()));
        let sink = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut v) = sink.lock() {
                v.push(e.to_string());
            }
        }));
        let lost = Arc::new(Mutex::new(None));
        let flag = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            if let Ok(mut l) = flag.lock() {
                *l = Some(format!("{reason:?}: {message}"));
            }
        });
        let pipeline_cache = features
            .contains(wgpu::Features::PIPELINE_CACHE)
            .then(|| PipelineCache::open(&device, &adapter.get_info()))
            .flatten();
        let timestamp_ns = features
            .contains(wgpu::Features::TIMESTAMP_QUERY)
            .then(|| queue.get_timestamp_period() as f64);
        Ok(Gpu {
            timestamp_ns,
            pipeline_cache,
            device,
            queue,
            kernels: Kernels::default(),
            limits,
            uncaptured,
            lost,
        })
    }

    /// An error if the device was lost or an error escaped every scope since the last check.
    pub fn check(&self) -> Result<()> {
        if let Some(reason) = self.lost.lock().ok().and_then(|l| l.clone()) {
            return Err(Error::Other(format!(
                "the wgpu device was lost ({reason}); compile the model again on a new session"
            )));
        }
        let escaped: Vec<String> = self
            .uncaptured
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default();
        if escaped.is_empty() {
            Ok(())
        } else {
            Err(Error::Other(format!("wgpu: {}", escaped.join("; "))))
        }
    }

    /// Runs `f` inside validation and out-of-memory error scopes: what they catch becomes
    /// the error, with `what` saying what was being done.
    pub fn scoped<T>(&self, what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let value = f();
        let invalid = pollster::block_on(validation.pop());
        let out_of_memory = pollster::block_on(oom.pop());
        if let Some(e) = out_of_memory {
            return Err(Error::Other(format!(
                "wgpu ran out of device memory while {what}: {e}"
            )));
        }
        if let Some(e) = invalid {
            return Err(Error::Other(format!("wgpu rejected {what}: {e}")));
        }
        self.check()?;
        value
    }
}

/// A driver pipeline cache backed by a file named after wgpu's key for the adapter (vendor
/// and device), so pipelines compiled once are not compiled again by the next process.
pub(crate) struct PipelineCache {
    pub cache: wgpu::PipelineCache,
    path: PathBuf,
}

impl PipelineCache {
    fn open(device: &wgpu::Device, info: &wgpu::AdapterInfo) -> Option<PipelineCache> {
        let key = wgpu::util::pipeline_cache_key(info)?;
        let path = accel_core::cache::cache_dir()?.join("wgpu").join(key);
        // An unreadable file is no cache: it is rewritten on save.
        let data = std::fs::read(&path).ok();
        // SAFETY: the file holds what `get_data` returned for a cache of an adapter with the
        // same pipeline cache key (the file is named after it, and only `save` writes it,
        // atomically). wgpu checks its header (version, key, size) and the driver its own;
        // with `fallback` data they reject gives an empty cache instead of an error.
        let cache = unsafe {
            device.create_pipeline_cache(&wgpu::PipelineCacheDescriptor {
                label: Some("accel pipelines"),
                data: data.as_deref(),
                fallback: true,
            })
        };
        Some(PipelineCache { cache, path })
    }

    /// Writes the cache's data to its file (a temporary file renamed over it, so readers
    /// never see half a file). Failing to write only costs the next process a recompile.
    pub fn save(&self) {
        let Some(data) = self.cache.get_data() else {
            return;
        };
        let _ = accel_core::cache::write_atomic(&self.path, &data);
    }
}
