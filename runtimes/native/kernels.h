// rxt-edge's own CPU kernels: one lite custom op per source file, registered together by library.cc.
#pragma once
#define ORT_API_MANUAL_INIT
#include "onnxruntime_cxx_api.h"
#include "onnxruntime_lite_custom_op.h"

// Each made once a process, however many sessions register the library.
Ort::Custom::OrtLiteCustomOp* MemoryAttentionInt8Op();  // memory_attention.cc
Ort::Custom::OrtLiteCustomOp* MatMulInt4Op();           // matmul_int4.cc
Ort::Custom::OrtLiteCustomOp* MatMulInt4BiasOp();       // matmul_int4.cc: the same kernel with the bias
