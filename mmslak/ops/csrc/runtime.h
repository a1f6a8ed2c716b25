// What every CPU kernel of mmslak._ext shares: the bfloat16 storage type, the instruction set to run
// (detected once, here), and dynamic scheduling on torch's intra-op thread pool.
//
// Only plain types and C builtins appear here: the per-ISA kernel files (compiled with -mavx512f and
// the like) include this header, and any inline function with external linkage they compiled could be
// merged by the linker into code that runs on a CPU without that instruction set.
#pragma once

#include <cstdint>

namespace mmslak::cpu {

// A bfloat16 value: the upper 16 bits of a float32 (the layout of at::BFloat16).
struct BFloat16 {
  uint16_t bits;
};

// Kernel builds, from the least to the most capable. kGeneric is compiled with the compiler's vector
// extensions for the baseline of the target (SSE2 on x86-64, NEON on aarch64); the others exist only
// on x86-64, when the compiler supports them (setup.py defines MMSLAK_WITH_<ISA>).
enum class Isa : int { kGeneric = 0, kAvx2 = 1, kAvx512 = 2, kAvx512Bf16 = 3 };

// The best build this CPU runs, or the one MMSLAK_CPU_ISA=generic|avx2|avx512|avx512bf16 asks for (to
// test the narrower kernels on a wider CPU; asking for more than the CPU or the build has is an error).
// Read at every call.
Isa current_isa();
// The best build this CPU runs (MMSLAK_CPU_ISA may ask for it or any narrower one).
Isa best_isa();
const char* isa_name(Isa isa);

// A shared counter handing out task indices [0, total) to the workers of run_workers.
struct TaskQueue {
  int64_t next;
  int64_t total;
};

// The next task, or -1 when none is left.
static inline int64_t take_task(TaskQueue* queue) {
  const int64_t task = __atomic_fetch_add(&queue->next, 1, __ATOMIC_RELAXED);
  return task < queue->total ? task : -1;
}

// Runs worker(context, queue) on threads of torch's intra-op pool (at::parallel_for, so
// torch.set_num_threads applies and nested calls run serially); each worker sets up its scratch memory
// once and takes tasks until the queue is empty, so a thread that the OS preempts holds up one task, not a
// fixed share of them. `work_per_task` (vector operations, roughly) sets how many threads are worth
// waking: at most one per kMinWorkPerThread of work, so small calls run on the calling thread and do not
// wait for a busy machine to schedule the others.
constexpr int64_t kMinWorkPerThread = int64_t(1) << 15;
using Worker = void (*)(void* context, TaskQueue* queue);
void run_workers(int64_t tasks, int64_t work_per_task, void* context, Worker worker);

}  // namespace mmslak::cpu
