// The library's entry point: onnxruntime calls RegisterCustomOps once per session that registers it.
#include <cstring>

#include "kernels.h"

namespace {

// The session config entry "rxt_edge.matmul_int4" ("0" or "1", set by runtimes/native_kernels.py from the CPU:
// our 4-bit products only where they measured faster); absent, they are on.
bool WantsMatMulInt4(const OrtApi* api, const OrtSessionOptions* options) {
  const char* key = "rxt_edge.matmul_int4";
  int has = 0;
  OrtStatus* status = api->HasSessionConfigEntry(options, key, &has);
  if (status != nullptr) {
    api->ReleaseStatus(status);
    return true;
  }
  if (!has) return true;
  char value[8] = {};
  size_t size = sizeof value;
  status = api->GetSessionConfigEntry(options, key, value, &size);
  if (status != nullptr) {
    api->ReleaseStatus(status);
    return true;
  }
  return std::strcmp(value, "0") != 0;
}

}  // namespace

// Two domains named "rxt_edge", made once: with every kernel, and without the 4-bit products (their function's
// body, onnxruntime's MatMulNBits, runs instead). Each session adds the one its options ask for.
extern "C" __attribute__((visibility("default"))) OrtStatus* ORT_API_CALL
RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  const OrtApi* api = api_base->GetApi(ORT_API_VERSION);
  if (api == nullptr) return nullptr;  // an onnxruntime older than these headers: the loader checks first
  Ort::InitApi(api);
  static Ort::CustomOpDomain all{"rxt_edge"}, without_matmul{"rxt_edge"};
  static const bool added = (all.Add(MemoryAttentionInt8Op()), all.Add(MatMulInt4Op()), all.Add(MatMulInt4BiasOp()),
                             without_matmul.Add(MemoryAttentionInt8Op()), true);
  (void)added;
  Ort::UnownedSessionOptions(options).Add(WantsMatMulInt4(api, options) ? all : without_matmul);
  return nullptr;
}
