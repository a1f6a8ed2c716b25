// ISA detection and the worker pool of runtime.h.
#include "runtime.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdlib>
#include <string>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#endif

namespace mmslak::cpu {
namespace {

#if defined(__x86_64__) || defined(_M_X64)
// AVX512-BF16 (CPUID leaf 7, sub-leaf 1, EAX bit 5); __builtin_cpu_supports does not know it in every
// compiler version that can build the kernels.
bool cpu_has_avx512_bf16() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx) == 0) return false;
  return (eax >> 5) & 1u;
}
#endif

Isa detect_best_isa() {
  Isa best = Isa::kGeneric;
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  // __builtin_cpu_supports also checks that the OS saves the vector registers (XCR0).
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw");
#if defined(MMSLAK_WITH_AVX2)
  if (avx2) best = Isa::kAvx2;
#endif
#if defined(MMSLAK_WITH_AVX512)
  if (avx512) best = Isa::kAvx512;
#endif
#if defined(MMSLAK_WITH_AVX512BF16)
  if (avx512 && cpu_has_avx512_bf16()) best = Isa::kAvx512Bf16;
#endif
  (void)avx512;
#endif
  return best;
}

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512Bf16: return "avx512bf16";
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    default: return "generic";
  }
}

Isa best_isa() {
  static const Isa best = detect_best_isa();
  return best;
}

Isa current_isa() {
  const Isa best = best_isa();
  const char* requested = std::getenv("MMSLAK_CPU_ISA");
  if (requested == nullptr || *requested == '\0') return best;
  const std::string name(requested);
  for (Isa isa : {Isa::kGeneric, Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Bf16}) {
    if (name != isa_name(isa)) continue;
    TORCH_CHECK(isa <= best, "MMSLAK_CPU_ISA=", name, " but this CPU or this build of mmslak._ext runs at most ",
                isa_name(best));
    return isa;
  }
  TORCH_CHECK(false, "MMSLAK_CPU_ISA must be generic, avx2, avx512 or avx512bf16 (or unset), got '", name, "'");
}

void run_workers(int64_t tasks, int64_t work_per_task, void* context, Worker worker) {
  if (tasks <= 0) return;
  TaskQueue queue{0, tasks};
  const int64_t worth = std::max<int64_t>(1, tasks * std::max<int64_t>(work_per_task, 1) / kMinWorkPerThread);
  const int64_t workers = std::min<int64_t>({tasks, worth, int64_t(at::get_num_threads())});
  at::parallel_for(0, workers, 1, [&](int64_t begin, int64_t end) {
    // Run serially (one thread, or a call from inside a parallel region), the first worker takes
    // every task; the others would only set up scratch memory.
    for (int64_t w = begin; w < end && __atomic_load_n(&queue.next, __ATOMIC_RELAXED) < tasks; ++w)
      worker(context, &queue);
  });
}

}  // namespace mmslak::cpu
