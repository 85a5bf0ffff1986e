//! Execution providers: each is its own backend id, compiled in by a cargo feature and probed
//! at run time.

use ort::ep::ExecutionProviderDispatch;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Provider {
    Cpu,
    OpenVino,
    Cuda,
    TensorRt,
    Qnn,
    Nnapi,
    CoreMl,
    Xnnpack,
    Acl,
}

/// Session and provider options surfaced to users.
#[derive(Clone, Debug)]
pub struct OrtConfig {
    /// libonnxruntime to load (first use in a process wins).
    pub library: Option<PathBuf>,
    /// ONNX Runtime graph optimization level 0 (off) to 3 (all).
    pub optimization_level: u8,
    /// OpenVINO device_type: "CPU", "GPU", "NPU". Upper case: ORT accepts "cpu" and then
    /// places no node on OpenVINO.
    pub openvino_device: String,
    /// OpenVINO precision: "FP32", "FP16", "ACCURACY".
    pub openvino_precision: String,
    pub cuda_device: i32,
    pub tensorrt_fp16: bool,
    pub tensorrt_engine_cache: Option<PathBuf>,
    /// Give ORT accel's optimized graph (re-serialized) instead of the original file, to
    /// compare the two.
    pub run_optimized_graph: bool,
}

impl Default for OrtConfig {
    fn default() -> Self {
        OrtConfig {
            library: None,
            optimization_level: 3,
            openvino_device: "CPU".into(),
            openvino_precision: "FP32".into(),
            cuda_device: 0,
            tensorrt_fp16: false,
            tensorrt_engine_cache: None,
            run_optimized_graph: false,
        }
    }
}

impl Provider {
    /// Every provider accel knows, compiled in or not (those that are not say so when probed).
    pub const ALL: [Provider; 9] = [
        Provider::Cpu,
        Provider::OpenVino,
        Provider::Cuda,
        Provider::TensorRt,
        Provider::Qnn,
        Provider::Nnapi,
        Provider::CoreMl,
        Provider::Xnnpack,
        Provider::Acl,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Provider::Cpu => "ort-cpu",
            Provider::OpenVino => "ort-openvino",
            Provider::Cuda => "ort-cuda",
            Provider::TensorRt => "ort-tensorrt",
            Provider::Qnn => "ort-qnn",
            Provider::Nnapi => "ort-nnapi",
            Provider::CoreMl => "ort-coreml",
            Provider::Xnnpack => "ort-xnnpack",
            Provider::Acl => "ort-acl",
        }
    }

    /// The name ONNX Runtime uses in profiles and logs.
    pub fn ort_name(self) -> &'static str {
        match self {
            Provider::Cpu => "CPUExecutionProvider",
            Provider::OpenVino => "OpenVINOExecutionProvider",
            Provider::Cuda => "CUDAExecutionProvider",
            Provider::TensorRt => "TensorrtExecutionProvider",
            Provider::Qnn => "QNNExecutionProvider",
            Provider::Nnapi => "NnapiExecutionProvider",
            Provider::CoreMl => "CoreMLExecutionProvider",
            Provider::Xnnpack => "XnnpackExecutionProvider",
            Provider::Acl => "ACLExecutionProvider",
        }
    }

    /// The cargo feature that compiles this provider in.
    pub fn feature(self) -> &'static str {
        self.id().trim_start_matches("ort-")
    }

    /// The provider registration (error on failure, so ORT cannot fall back silently), or why
    /// this build has none. `None` for the CPU provider, which is always there.
    pub fn dispatch(self, cfg: &OrtConfig) -> Result<Option<ExecutionProviderDispatch>, String> {
        let not_built = || {
            Err(format!(
                "this build of accel has no {} provider (build accel-ort with --features {})",
                self.ort_name(),
                self.feature()
            ))
        };
        let _ = cfg;
        match self {
            Provider::Cpu => Ok(None),
            #[cfg(feature = "openvino")]
            Provider::OpenVino => Ok(Some(
                ort::ep::OpenVINO::default()
                    .with_device_type(&cfg.openvino_device)
                    .with_precision(&cfg.openvino_precision)
                    .build()
                    .error_on_failure(),
            )),
            #[cfg(feature = "cuda")]
            Provider::Cuda => Ok(Some(
                ort::ep::CUDA::default()
                    .with_device_id(cfg.cuda_device)
                    .build()
                    .error_on_failure(),
            )),
            #[cfg(feature = "tensorrt")]
            Provider::TensorRt => {
                let mut trt = ort::ep::TensorRT::default()
                    .with_device_id(cfg.cuda_device)
                    .with_fp16(cfg.tensorrt_fp16);
                if let Some(dir) = &cfg.tensorrt_engine_cache {
                    trt = trt
                        .with_engine_cache(true)
                        .with_engine_cache_path(dir.display());
                }
                Ok(Some(trt.build().error_on_failure()))
            }
            #[cfg(feature = "qnn")]
            Provider::Qnn => Ok(Some(ort::ep::QNN::default().build().error_on_failure())),
            #[cfg(feature = "nnapi")]
            Provider::Nnapi => Ok(Some(ort::ep::NNAPI::default().build().error_on_failure())),
            #[cfg(feature = "coreml")]
            Provider::CoreMl => Ok(Some(ort::ep::CoreML::default().build().error_on_failure())),
            #[cfg(feature = "xnnpack")]
            Provider::Xnnpack => Ok(Some(ort::ep::XNNPACK::default().build().error_on_failure())),
            #[cfg(feature = "acl")]
            Provider::Acl => Ok(Some(ort::ep::ACL::default().build().error_on_failure())),
            #[allow(unreachable_patterns)]
            _ => not_built(),
        }
    }
}
