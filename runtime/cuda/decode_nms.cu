// SSD decode + NMS (per class, or across the classes) for a whole batch on the GPU: ssd-edge's CUDA kernels.
//
// The semantics of the NumPy path (runtime/postprocess/fast.py): softmax over classes; per
// class c >= 1 the default boxes scoring > score_threshold; the top_k best of each class
// (score descending, ties by lower default-box index); decode against the default boxes
// (variances, log-size clamp) and clip to [0, 1]; greedy NMS per class at iou_threshold;
// merge and keep the best max_detections (score descending, then default box, then class).
//
// The softmax runs in float32 (CUDA's accurate expf, a fixed-order sum, IEEE division): its
// scores are within about 1e-6 (relative) of NumPy's float64 softmax, not equal to the bit.
// Everything after it is exact: given the kernel's scores, NumPy's own threshold, top-k,
// decode, NMS and merge give the kernel's detections to the bit. The box decode keeps its
// two exponentials in double, rounded once to float (as runtime.boxes.decode does), and the
// box and IoU arithmetic uses the explicitly rounded float intrinsics (never contracted into
// FMAs). The softmax runs only for default boxes that a float32 bound cannot rule out (the
// NumPy path's possible_boxes, the same bound). The comparison rule that the tests and
// ssd-doctor apply: runtime/doctor/kernel_cases.py (kernel_difference).
//
// Plain extern "C" kernels, no includes, no host code: loadable by pycuda's SourceModule
// (no_extern_c=True) and by CuPy's RawModule / NVRTC alike; never compile with fast-math.
// Launch sequence, grid, block and shared-memory sizes are set by runtime/cuda/plan.py:
//   1. ssd_softmax     grid (ceil(P / 8), B), block 256 (8 warps)  possible (B, P) and probs (B, C, P)
//                                                                   of the possible rows
//   2. ssd_class_nms   grid (C - 1, B), block 256, dynamic shared  per class: kept keys and boxes
//                      (not launched for a background-only model, C = 1)
//   3. ssd_merge       grid (B), block 256, dynamic shared         per image: the best max_detections,
//                      written as records right after those of the images before it, so that
//                      det_count (B) and the records are one contiguous span to copy back
// With agnostic_nms (NMS across the classes) steps 2 and 3 are ssd_class_top_k, ssd_agnostic_nms
// and ssd_pack instead: see "class-agnostic NMS" at the end.
// Limits (checked by the plan): P < 2^20, 1 <= C <= 4096, min(top_k, P) <= 512, max_detections <= 1024.

typedef unsigned long long u64;

#define PRIOR_BITS 20
#define CLASS_BITS 12
#define PRIOR_MASK ((1u << PRIOR_BITS) - 1u)
#define CLASS_MASK ((1u << CLASS_BITS) - 1u)
#define RECORD_HEAD 6  // x1, y1, x2, y2, score, label; then the C softmax scores

// ---------------------------------------------------------------- exact float arithmetic

// The box decode's exponential: double, rounded once, as runtime.boxes.decode computes it,
// so that the boxes are NumPy's to the bit. Two per decoded candidate, a small share of the
// work (the softmax's exponentials are float32 expf).
__device__ __forceinline__ float exp_rounded(float x)
{
    return __double2float_rn(exp((double)x));
}

__device__ __forceinline__ float clip01(float v)
{
    return v != v ? v : fminf(fmaxf(v, 0.0f), 1.0f);  // NaN stays NaN, as np.clip leaves it
}

__device__ __forceinline__ float min_keep_nan(float v, float bound)
{
    return v != v ? v : fminf(v, bound);  // np.minimum propagates NaN, fminf would drop it
}

__device__ __forceinline__ bool is_nan4(float4 b)
{
    return b.x != b.x || b.y != b.y || b.z != b.z || b.w != b.w;
}

// IoU exactly as boxes.pairwise_iou computes it in float32; 0 where NumPy gets NaN.
__device__ __forceinline__ float box_iou(float4 a, float4 b)
{
    if (is_nan4(a) || is_nan4(b)) return 0.0f;
    float w = fmaxf(__fsub_rn(fminf(a.z, b.z), fmaxf(a.x, b.x)), 0.0f);
    float h = fmaxf(__fsub_rn(fminf(a.w, b.w), fmaxf(a.y, b.y)), 0.0f);
    float inter = __fmul_rn(w, h);
    float area_a = __fmul_rn(__fsub_rn(a.z, a.x), __fsub_rn(a.w, a.y));
    float area_b = __fmul_rn(__fsub_rn(b.z, b.x), __fsub_rn(b.w, b.y));
    float uni = __fsub_rn(__fadd_rn(area_a, area_b), inter);
    return uni > 0.0f ? __fdiv_rn(inter, uni) : 0.0f;
}

// postprocess.decode_boxes for one box, then clipped to [0, 1].
__device__ __forceinline__ float4 decode_box(const float* loc, const float* prior, float v_centre, float v_size,
                                             float size_clip)
{
    float cx = __fadd_rn(prior[0], __fmul_rn(__fmul_rn(loc[0], v_centre), prior[2]));
    float cy = __fadd_rn(prior[1], __fmul_rn(__fmul_rn(loc[1], v_centre), prior[3]));
    float w = __fmul_rn(prior[2], exp_rounded(min_keep_nan(__fmul_rn(loc[2], v_size), size_clip)));
    float h = __fmul_rn(prior[3], exp_rounded(min_keep_nan(__fmul_rn(loc[3], v_size), size_clip)));
    float half_w = __fdiv_rn(w, 2.0f), half_h = __fdiv_rn(h, 2.0f);
    float4 box;
    box.x = clip01(__fsub_rn(cx, half_w));
    box.y = clip01(__fsub_rn(cy, half_h));
    box.z = clip01(__fadd_rn(cx, half_w));
    box.w = clip01(__fadd_rn(cy, half_h));
    return box;
}

// ---------------------------------------------------------------- sort keys
// Keys compare as the final order: larger key = better. Scores are >= 0 here, so their
// float bits order as unsigned integers; valid keys are never 0 (0 pads sort buffers).

__device__ __forceinline__ u64 class_key(float score, int prior)
{
    return ((u64)__float_as_uint(score) << 32) | (u64)(0xFFFFFFFFu - (unsigned int)prior);
}

__device__ __forceinline__ int class_key_prior(u64 key)
{
    return (int)(0xFFFFFFFFu - (unsigned int)(key & 0xFFFFFFFFull));
}

__device__ __forceinline__ u64 merge_key(float score, int prior, int cls)
{
    return ((u64)__float_as_uint(score) << 32) | ((u64)(PRIOR_MASK - (unsigned int)prior) << CLASS_BITS) |
           (u64)(CLASS_MASK - (unsigned int)cls);
}

__device__ __forceinline__ float key_score(u64 key) { return __uint_as_float((unsigned int)(key >> 32)); }
__device__ __forceinline__ int merge_key_prior(u64 key)
{
    return (int)(PRIOR_MASK - (unsigned int)((key >> CLASS_BITS) & PRIOR_MASK));
}
__device__ __forceinline__ int merge_key_class(u64 key) { return (int)(CLASS_MASK - (unsigned int)(key & CLASS_MASK)); }

// One record: box, score, label, then the default box's C softmax scores (class c of the
// image's probs at column[c * P]).
__device__ __forceinline__ void write_record(float* record, float4 box, u64 key, const float* column, int num_priors,
                                             int num_classes)
{
    record[0] = box.x;
    record[1] = box.y;
    record[2] = box.z;
    record[3] = box.w;
    record[4] = key_score(key);
    record[5] = (float)merge_key_class(key);
    for (int c = 0; c < num_classes; ++c, column += num_priors) record[RECORD_HEAD + c] = *column;
}

// One class's candidates, read straight from the probabilities: item i is default box i.
struct ClassSource {
    const float* column;  // probs of one image at class c: element p is column[p]
    const unsigned char* possible;  // of one image: possible[p] == 0 means column[p] was not computed
    float threshold;
    __device__ bool get(int i, u64& key) const
    {
        if (!possible[i]) return false;
        float score = column[i];
        if (!(score > threshold)) return false;
        key = class_key(score, i);
        return true;
    }
    __device__ int slot(int i) const { return i; }
};

// The candidates of class cls of one image (probs B x C x P as ssd_softmax writes them): those
// computed (possible) with a score above the threshold.
__device__ __forceinline__ ClassSource class_source(const float* probs, const unsigned char* possible, int image,
                                                    int cls, int num_priors, int num_classes, float threshold)
{
    ClassSource source;
    source.column = probs + ((long long)image * num_classes + cls) * num_priors;
    source.possible = possible + (long long)image * num_priors;
    source.threshold = threshold;
    return source;
}

// One image's kept detections, class after class: item i is kept entry i - first[g] of the
// class g with first[g] <= i < first[g + 1] (first: the prefix sums of the kept counts).
struct MergeSource {
    const u64* keys;  // entry j of class g at keys[g * k + j]
    const int* first;  // groups + 1 entries, in shared memory
    int groups;
    int k;
    __device__ int slot(int i) const  // where item i is in keys
    {
        int lo = 0, hi = groups;  // first[lo] <= i < first[hi]
        while (hi - lo > 1) {
            int mid = (lo + hi) >> 1;
            if (first[mid] <= i) lo = mid;
            else hi = mid;
        }
        return lo * k + (i - first[lo]);
    }
    __device__ bool get(int i, u64& key) const
    {
        key = keys[slot(i)];
        return true;
    }
};

// The items of a MergeSource that take part in the agnostic NMS and are below `upper`: what
// it has not yet taken (it takes them best first, a chunk at a time; keys are distinct). Of a
// default box whose box overlaps itself only the best candidate takes part (best[prior], 0
// for a box that does not: then every candidate of it does).
struct BelowSource {
    MergeSource all;
    const u64* best;  // of one image, by default box
    u64 upper;
    __device__ bool get(int i, u64& key) const
    {
        all.get(i, key);
        if (key >= upper) return false;
        u64 first = best[merge_key_prior(key)];
        return first == 0ull || first == key;
    }
    __device__ int slot(int i) const { return all.slot(i); }
};

// The padded length the bitonic sort needs for n keys: the next power of two, at least 2.
__device__ __forceinline__ int sort_length(int n)
{
    int length = 2;
    while (length < n) length <<= 1;
    return length;
}

struct SelectState {  // shared scalars of the block-wide helpers
    int digit;
    int remaining;
    int done;
    int count;
};

// The cutoff key such that exactly `wanted` of the source's (distinct) keys are >= it:
// a block-wide MSB-first radix select, 8 bits per pass, stopping as soon as a whole bin
// is taken. Every thread of the block must call it.
template <class Source>
__device__ u64 radix_select(const Source& source, int items, int wanted, unsigned int* hist, SelectState* state)
{
    u64 prefix = 0, mask = 0;
    int remaining = wanted;
    for (int shift = 56; shift >= 0; shift -= 8) {
        for (int i = threadIdx.x; i < 256; i += blockDim.x) hist[i] = 0;
        __syncthreads();
        for (int i = threadIdx.x; i < items; i += blockDim.x) {
            u64 key;
            if (source.get(i, key) && (key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 0xFFu], 1u);
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            int above = 0, digit = 255;
            for (; digit > 0; --digit) {
                if (above + (int)hist[digit] >= remaining) break;
                above += (int)hist[digit];
            }
            state->digit = digit;
            state->remaining = remaining - above;
            state->done = (int)hist[digit] == remaining - above;
        }
        __syncthreads();
        prefix |= (u64)state->digit << shift;
        mask |= (u64)0xFFu << shift;
        remaining = state->remaining;
        int done = state->done;
        __syncthreads();  // all have read the state before thread 0 writes it again
        if (done) break;
    }
    return prefix;
}

// Count the source's keys; gather those >= cutoff into keys[] (and where each is in the
// source, source.slot(item), into payload[] when given), in arbitrary order. Returns how
// many were gathered.
template <class Source>
__device__ int gather_keys(const Source& source, int items, u64 cutoff, u64* keys, int* payload, SelectState* state)
{
    if (threadIdx.x == 0) state->count = 0;
    __syncthreads();
    for (int i = threadIdx.x; i < items; i += blockDim.x) {
        u64 key;
        if (source.get(i, key) && key >= cutoff) {
            int slot = atomicAdd(&state->count, 1);
            keys[slot] = key;
            if (payload) payload[slot] = source.slot(i);
        }
    }
    __syncthreads();
    int gathered = state->count;
    __syncthreads();
    return gathered;
}

template <class Source>
__device__ int count_keys(const Source& source, int items, SelectState* state)
{
    if (threadIdx.x == 0) state->count = 0;
    __syncthreads();
    int mine = 0;
    for (int i = threadIdx.x; i < items; i += blockDim.x) {
        u64 key;
        mine += source.get(i, key) ? 1 : 0;
    }
    if (mine) atomicAdd(&state->count, mine);
    __syncthreads();
    int total = state->count;
    __syncthreads();
    return total;
}

// Bitonic sort of keys[0, n), largest first; payload follows. Pads keys (and payload) with
// zeros up to the next power of two, so both need room for sort_length(n) entries.
__device__ void sort_descending(u64* keys, int* payload, int n)
{
    const int n_pad = sort_length(n);
    for (int i = n + threadIdx.x; i < n_pad; i += blockDim.x) {
        keys[i] = 0ull;
        if (payload) payload[i] = 0;
    }
    for (int size = 2; size <= n_pad; size <<= 1) {
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            __syncthreads();
            for (int i = threadIdx.x; i < n_pad; i += blockDim.x) {
                int j = i ^ stride;
                if (j <= i) continue;
                u64 a = keys[i], b = keys[j];
                bool descending = (i & size) == 0;
                if (descending ? (a < b) : (a > b)) {
                    keys[i] = b;
                    keys[j] = a;
                    if (payload) {
                        int t = payload[i];
                        payload[i] = payload[j];
                        payload[j] = t;
                    }
                }
            }
        }
    }
    __syncthreads();
}

// What select_class_candidates leaves in keys[0, k): the one difference between its two callers.
enum ClassCandidates {
    SORTED_CLASS_KEYS,  // ssd_class_nms: class keys, best first (keys has room for sort_length(k))
    UNSORTED_MERGE_KEYS,  // ssd_class_top_k: merge keys of class cls, in gather order
};

// The selection of both per-class kernels, so that ssd_class_nms and ssd_class_top_k cannot
// select differently: the candidates of class cls of one image (class_source), the top_k best
// of them (score descending, ties by lower default box; exactly min(candidates, top_k) of
// them, keys being distinct), their keys in keys[0, k) as OUTPUT says, and boxes[j] the box
// of keys[j], decoded and clipped. Returns k, the same in every thread; when it is 0 nothing
// was written. counted(k) runs in every thread as soon as k is known, before anything is
// selected (ssd_class_nms lays out the rest of its shared memory there: computed at that
// point, as before this helper, its registers stay as they were). Thread j % blockDim.x
// decodes entry j (each thread its own entries, so keys may be rewritten in place); the
// caller synchronises before other threads read them. Every thread of the block must call it.
template <ClassCandidates OUTPUT, class Counted>
__device__ __forceinline__ int select_class_candidates(const float* probs, const unsigned char* possible,
                                                       const float* locs, const float* priors, int image, int cls,
                                                       int num_priors, int num_classes, int top_k,
                                                       float score_threshold, float v_centre, float v_size,
                                                       float size_clip, u64* keys, float4* boxes, unsigned int* hist,
                                                       SelectState* state, Counted counted)
{
    const ClassSource source = class_source(probs, possible, image, cls, num_priors, num_classes, score_threshold);

    int candidates = count_keys(source, num_priors, state);
    int k = min(candidates, top_k);
    counted(k);
    if (k == 0) return 0;
    u64 cutoff = candidates > k ? radix_select(source, num_priors, k, hist, state) : 1ull;
    gather_keys(source, num_priors, cutoff, keys, (int*)0, state);  // ends with a barrier
    if (OUTPUT == SORTED_CLASS_KEYS) sort_descending(keys, (int*)0, k);  // ends with a barrier

    const float* image_locs = locs + (long long)image * num_priors * 4;
    for (int j = threadIdx.x; j < k; j += blockDim.x) {
        u64 key = keys[j];
        int prior = class_key_prior(key);
        boxes[j] = decode_box(image_locs + (long long)prior * 4, priors + (long long)prior * 4, v_centre, v_size,
                              size_clip);
        if (OUTPUT == UNSORTED_MERGE_KEYS) keys[j] = merge_key(key_score(key), prior, cls);
    }
    return k;
}

// ---------------------------------------------------------------- kernels

// Scores of the possible default boxes: the softmax over classes, in float32.
//
// One warp per default box (SOFTMAX_ROWS boxes per block, blockDim.x = 32 * SOFTMAX_ROWS,
// grid (ceil(P / SOFTMAX_ROWS), B)); lane l reads classes l, l + 32, ..., so a row's reads
// are coalesced. The warps of a block share nothing (no shared memory, no barrier): a warp
// whose box is not possible leaves after its first pass.
//   1. the best foreground logit (NaN wins, as np.max), each lane over its classes, then
//      across the lanes with shuffles (a max is exact in any order), and top = max_c
//      logits[c], the max of it and the background's logit; the box is possible when some class c >= 1 may score over the threshold:
//      fl(best - top) > log_bound (the NumPy path's possible_box_bound; every_row when the
//      threshold is <= 0), never for a background-only model (C = 1). possible[row] says
//      which.
//   2. for the possible boxes only: e_c = expf(fl(l_c - top)), CUDA's accurate expf (never
//      the __expf intrinsic: the kernel is compiled without fast-math); the sum in a fixed
//      order with no atomics (each lane adds its classes in order, then a butterfly over the
//      lanes: a fixed pairwise tree, the same value in every lane, as float addition
//      commutes), so a box's scores do not depend on timing or on the other boxes;
//      probs[image, c, p] = e_c / sum, IEEE division.
// The scores are within about 1e-6 (relative) of the float64 softmax, the rule the tests
// and ssd-doctor hold it to (runtime/doctor/kernel_cases.py); every later step (threshold,
// top-k, decode, NMS, merge) is exact on these scores. probs is classes first, (B, C, P),
// so that the class kernel's reads are coalesced. Rows that are not possible leave probs
// unwritten: the class kernel skips them, and no record copies them. Each exponential is
// computed once for C <= 32 * SOFTMAX_KEPT (kept in registers for the division), twice
// beyond.
#define SOFTMAX_ROWS 8
#define SOFTMAX_KEPT 4  // each lane keeps the exponentials of its first 4 classes (all, for C <= 128)
#define FULL_WARP 0xFFFFFFFFu

__device__ __forceinline__ float max_keep_nan(float a, float b) { return b > a || b != b ? b : a; }

extern "C" __global__ void ssd_softmax(const float* __restrict__ logits, unsigned char* __restrict__ possible,
                                       float* __restrict__ probs, int num_priors, int num_classes, float log_bound,
                                       int every_row)
{
    const int slot = threadIdx.x / 32, lane = threadIdx.x % 32, image = blockIdx.y;
    const int prior = blockIdx.x * SOFTMAX_ROWS + slot;
    if (slot >= SOFTMAX_ROWS || prior >= num_priors) return;  // the whole warp: no box
    const long long row = (long long)image * num_priors + prior;
    const float* in = logits + row * num_classes;
    const float minus_inf = __uint_as_float(0xFF800000u);

    float best = minus_inf;  // the best foreground logit: this lane's classes, then all
    for (int c = lane == 0 ? 32 : lane; c < num_classes; c += 32) best = max_keep_nan(best, in[c]);
    for (int offset = 16; offset > 0; offset >>= 1) best = max_keep_nan(best, __shfl_xor_sync(FULL_WARP, best, offset));
    const float top = max_keep_nan(in[0], best);  // the row's max: the background's logit or the best
    const bool exact = num_classes > 1 && (every_row != 0 || __fsub_rn(best, top) > log_bound);
    if (lane == 0) possible[row] = exact ? 1 : 0;
    if (!exact) return;  // the whole warp: the same top and best in every lane

    float kept[SOFTMAX_KEPT];  // this lane's exponentials of classes 32 k + lane, k < SOFTMAX_KEPT
#pragma unroll
    for (int k = 0; k < SOFTMAX_KEPT; ++k) kept[k] = 0.0f;
    float total = 0.0f;  // this lane's classes, in order
    for (int base = 0; base < num_classes; base += 32) {
        const int c = base + lane;
        if (c >= num_classes) break;
        const float e = expf(__fsub_rn(in[c], top));
#pragma unroll
        for (int k = 0; k < SOFTMAX_KEPT; ++k)  // constant indices: kept stays in registers
            if (base == 32 * k) kept[k] = e;
        total = __fadd_rn(total, e);
    }
    for (int offset = 16; offset > 0; offset >>= 1) total = __fadd_rn(total, __shfl_xor_sync(FULL_WARP, total, offset));

    float* out = probs + (long long)image * num_classes * num_priors + prior;  // class c at out[c * P]
    for (int base = 0; base < num_classes; base += 32) {
        const int c = base + lane;
        if (c >= num_classes) break;
        float e = base < 32 * SOFTMAX_KEPT ? 0.0f : expf(__fsub_rn(in[c], top));  // beyond kept: again
#pragma unroll
        for (int k = 0; k < SOFTMAX_KEPT; ++k)
            if (base == 32 * k) e = kept[k];
        out[(long long)c * num_priors] = __fdiv_rn(e, total);
    }
}

// mask[i * words + w] bit b: candidate 64w + b (> i) of boxes[0, n) overlaps candidate i by
// IoU > iou_threshold (words = ceil(n / 64) or more). All the block's threads share the cells;
// the caller synchronises before reading the mask.
__device__ __forceinline__ void overlap_mask(const float4* boxes, int n, int words, float iou_threshold, u64* mask)
{
    for (int cell = threadIdx.x; cell < n * words; cell += blockDim.x) {
        int i = cell / words, w = cell % words;
        u64 bits = 0ull;
        int first = w * 64;
        if (first + 63 > i) {
            float4 a = boxes[i];
            for (int b = 0; b < 64; ++b) {
                int j = first + b;
                if (j > i && j < n && box_iou(a, boxes[j]) > iou_threshold) bits |= 1ull << b;
            }
        }
        mask[cell] = bits;
    }
}

enum GreedyVerdict { GREEDY_STOP = -1, GREEDY_SKIP = 0, GREEDY_KEEP = 1 };

// The greedy pass over candidates [0, n), best first, through overlap_mask's bits: one thread,
// the removed bits in MAX_WORDS u64 (words <= MAX_WORDS; the kernel's only local memory).
// visit(i, count, removed) is called for each candidate in order, with count the ones kept
// before it and removed whether a kept, better candidate overlaps it; it returns GREEDY_KEEP
// (then i's mask row removes the candidates it overlaps), GREEDY_SKIP, or GREEDY_STOP to end
// the pass before i. Returns how many were kept.
template <int MAX_WORDS, class Visit>
__device__ __forceinline__ int greedy_pass(const u64* mask, int n, int words, Visit visit)
{
    u64 removed[MAX_WORDS];
    for (int w = 0; w < words; ++w) removed[w] = 0ull;
    int count = 0;
    for (int i = 0; i < n; ++i) {
        int w = i >> 6;
        GreedyVerdict verdict = visit(i, count, ((removed[w] >> (i & 63)) & 1ull) != 0ull);
        if (verdict == GREEDY_STOP) break;
        if (verdict == GREEDY_SKIP) continue;
        ++count;
        for (; w < words; ++w) removed[w] |= mask[(size_t)i * words + w];
    }
    return count;
}

// first[g] = the sum of counts[0, g) for g in [0, groups]: where each class's kept candidates
// start among the image's, first[groups] the total. One thread (C - 1 counts only).
__device__ __forceinline__ void count_prefix_sums(const int* counts, int groups, int* first)
{
    int total = 0;
    for (int g = 0; g < groups; ++g) {
        first[g] = total;
        total += counts[g];
    }
    first[groups] = total;
}

// One block per (foreground class, image): select the top_k candidates, sort them, decode
// them (select_class_candidates, as ssd_class_top_k selects them), greedy NMS through a
// suppression bit matrix, and write the kept ones as merge keys and boxes to slots
// [0, kept) of this (image, class).
// Dynamic shared memory: k_pad u64 keys | k_pad float4 boxes | k * ceil(k / 64) u64 mask | k_pad bytes.
extern "C" __global__ void ssd_class_nms(const float* __restrict__ probs, const unsigned char* __restrict__ possible,
                                         const float* __restrict__ locs,
                                         const float* __restrict__ priors, int num_priors, int num_classes,
                                         int top_k, int k_pad, float score_threshold, float iou_threshold,
                                         float v_centre, float v_size, float size_clip, u64* __restrict__ kept_keys,
                                         float4* __restrict__ kept_boxes, int* __restrict__ kept_count)
{
    extern __shared__ __align__(16) unsigned char smem[];
    __shared__ unsigned int hist[256];
    __shared__ SelectState state;

    const int cls = blockIdx.x + 1, image = blockIdx.y, groups = num_classes - 1;
    const long long slot_base = ((long long)image * groups + (cls - 1)) * top_k;
    u64* keys = (u64*)smem;
    float4* boxes = (float4*)(smem + (size_t)k_pad * sizeof(u64));
    u64* mask = (u64*)(smem + (size_t)k_pad * (sizeof(u64) + sizeof(float4)));

    int words;  // ceil(k / 64), and the keep flags after the k x words mask
    unsigned char* keep;
    const int k = select_class_candidates<SORTED_CLASS_KEYS>(  // sort_length(k) <= k_pad
        probs, possible, locs, priors, image, cls, num_priors, num_classes, top_k, score_threshold, v_centre, v_size,
        size_clip, keys, boxes, hist, &state, [&](int count) {
            words = (count + 63) / 64;
            keep = (unsigned char*)(mask + (size_t)count * words);
        });
    if (k == 0) {
        if (threadIdx.x == 0) kept_count[(long long)image * groups + (cls - 1)] = 0;
        return;
    }
    __syncthreads();

    overlap_mask(boxes, k, words, iou_threshold, mask);
    __syncthreads();

    if (threadIdx.x == 0) {  // the greedy pass itself is sequential: one thread, bit words
        greedy_pass<8>(mask, k, words, [&](int i, int, bool removed) {
            keep[i] = removed ? 0 : 1;
            return removed ? GREEDY_SKIP : GREEDY_KEEP;
        });
        state.count = 0;
    }
    __syncthreads();

    for (int j = threadIdx.x; j < k; j += blockDim.x) {
        if (!keep[j]) continue;
        int slot = atomicAdd(&state.count, 1);
        u64 key = keys[j];
        kept_keys[slot_base + slot] = merge_key(key_score(key), class_key_prior(key), cls);
        kept_boxes[slot_base + slot] = boxes[j];
    }
    __syncthreads();
    if (threadIdx.x == 0) kept_count[(long long)image * groups + (cls - 1)] = state.count;
}

// One block per image: the best max_detections of all classes' kept boxes, in the final
// order, as records (x1, y1, x2, y2, score, label, C softmax scores): rows [0, count) of this
// image start right after the records of the images before it (their counts are
// min(kept, max_detections), summed from kept_count), so all images' records are packed
// back to back and the host copies back exactly what was found. det_count[image] = count.
// Dynamic shared memory: m_pad u64 keys | m_pad int indices | C int prefix sums of the kept
// counts (classes 1..C-1, then the total).
extern "C" __global__ void ssd_merge(const float* __restrict__ probs, const u64* __restrict__ kept_keys,
                                     const float4* __restrict__ kept_boxes, const int* __restrict__ kept_count,
                                     int num_priors, int num_classes, int top_k, int max_detections, int m_pad,
                                     float* __restrict__ packed, int* __restrict__ det_count)
{
    extern __shared__ __align__(16) unsigned char smem[];
    __shared__ unsigned int hist[256];
    __shared__ SelectState state;
    __shared__ int records_before;  // of the images before this one

    const int image = blockIdx.x, groups = num_classes - 1, width = RECORD_HEAD + num_classes;
    const long long slot_base = (long long)image * groups * top_k;
    u64* keys = (u64*)smem;
    int* index = (int*)(smem + (size_t)m_pad * sizeof(u64));
    int* first = index + m_pad;

    if (threadIdx.x == 0) {
        count_prefix_sums(kept_count + (long long)image * groups, groups, first);
        records_before = 0;
    }
    __syncthreads();
    int before = 0;  // this thread's share of the images before this one; integer sums: exact in any order
    for (int i = threadIdx.x; i < image; i += blockDim.x) {
        const int* counts = kept_count + (long long)i * groups;
        int kept_i = 0;
        for (int g = 0; g < groups; ++g) kept_i += counts[g];
        before += min(kept_i, max_detections);
    }
    if (before) atomicAdd(&records_before, before);  // read after the sort's barriers
    MergeSource source;
    source.keys = kept_keys + slot_base;
    source.first = first;
    source.groups = groups;
    source.k = top_k;
    const int kept = first[groups];  // the items: every one a kept detection

    int m = min(kept, max_detections);
    u64 cutoff = kept > m ? radix_select(source, kept, m, hist, &state) : 1ull;
    gather_keys(source, kept, cutoff, keys, index, &state);
    sort_descending(keys, index, m);  // sort_length(m) <= m_pad; ends with a barrier
    const long long offset = records_before;

    const float* image_probs = probs + (long long)image * num_priors * num_classes;
    for (int r = threadIdx.x; r < m; r += blockDim.x) {
        u64 key = keys[r];
        int prior = merge_key_prior(key);
        write_record(packed + (offset + r) * width, kept_boxes[slot_base + index[r]], key, image_probs + prior,
                     num_priors, num_classes);
    }
    if (threadIdx.x == 0) det_count[image] = m;
}

// ---------------------------------------------------------------- class-agnostic NMS
// With agnostic_nms the plan launches, after ssd_softmax:
//   2. ssd_class_top_k   grid (C - 1, B), block 256, no dynamic shared   per class: the top_k
//                        candidates, decoded, unsuppressed, as merge keys and boxes
//   3. ssd_agnostic_nms  grid (B), block 256, dynamic shared            per image: greedy NMS
//                        across every class's candidates in the final order, up to max_detections
//                        kept; det_count[image] = how many
//   4. ssd_pack          grid (B), block 256                              per image: its records,
//                        packed after those of the images before it
// Four launches, not three: an image's records start after the earlier images' records, and
// their number is known only once those images' cross-class NMS has ended (ssd_merge can
// count them from kept_count; here nothing can, short of a grid-wide wait, which one block
// per SM, as on the Jetson Nano, could deadlock). Still one synchronisation per batch.

// One block per (foreground class, image): the top_k candidates of the class (score
// descending, ties by lower default box: ssd_class_nms's selection, the same
// select_class_candidates), decoded, written unsorted as merge keys and boxes to slots
// [0, k) of this (image, class); no NMS here.
extern "C" __global__ void ssd_class_top_k(const float* __restrict__ probs, const unsigned char* __restrict__ possible,
                                           const float* __restrict__ locs, const float* __restrict__ priors,
                                           int num_priors, int num_classes, int top_k, float score_threshold,
                                           float v_centre, float v_size, float size_clip, u64* __restrict__ kept_keys,
                                           float4* __restrict__ kept_boxes, int* __restrict__ kept_count)
{
    __shared__ unsigned int hist[256];
    __shared__ SelectState state;

    const int cls = blockIdx.x + 1, image = blockIdx.y, groups = num_classes - 1;
    const long long slot_base = ((long long)image * groups + (cls - 1)) * top_k;

    const int k = select_class_candidates<UNSORTED_MERGE_KEYS>(
        probs, possible, locs, priors, image, cls, num_priors, num_classes, top_k, score_threshold, v_centre, v_size,
        size_clip, kept_keys + slot_base, kept_boxes + slot_base, hist, &state, [](int) {});
    if (threadIdx.x == 0) kept_count[(long long)image * groups + (cls - 1)] = k;
}

#define AGNOSTIC_MAX_CHUNK 256  // candidates per chunk: its suppression bits are 256 x 4 u64 (8 KiB)

// One block per image: greedy NMS across the classes. The candidates of every class (the
// kept keys and boxes of ssd_class_top_k) are taken best first (score descending, then
// default box, then class: the merge keys' order) in chunks of `chunk` (a power of two, at
// most AGNOSTIC_MAX_CHUNK), each selected below the last one's worst and sorted; a candidate
// is kept unless a kept, better candidate of any class overlaps it by IoU > iou_threshold
// (the kept ones of earlier chunks, checked in parallel, and the better ones of its chunk,
// through a suppression bit matrix as in ssd_class_nms). A default box's candidates in
// several classes share one box: when it overlaps itself (IoU 1 > iou_threshold, unless the
// box is empty or NaN) only the best can be kept (it removes the others, or a kept box that
// removes it removes them too), so only the best takes part (best: one u64 per default box
// of the image, the best key by atomicMax): an uncertain head's many classes per box cost
// no chunks. It stops as soon as max_detections are kept: later candidates cannot change
// the ones kept before them. The kept ones go to nms_keys / nms_boxes (max_detections slots
// per image) in the final order; det_count[image] = how many.
// Dynamic shared memory: chunk float4 boxes | chunk u64 keys | chunk * chunk / 64 u64 mask |
// chunk int slots | C int prefix sums of the candidate counts | chunk flags.
extern "C" __global__ void ssd_agnostic_nms(const u64* __restrict__ kept_keys, const float4* __restrict__ kept_boxes,
                                            const int* __restrict__ kept_count, int num_priors, int num_classes,
                                            int top_k, int max_detections, int chunk, float iou_threshold,
                                            u64* __restrict__ best, u64* __restrict__ nms_keys,
                                            float4* __restrict__ nms_boxes, int* __restrict__ det_count)
{
    extern __shared__ __align__(16) unsigned char smem[];
    __shared__ unsigned int hist[256];
    __shared__ SelectState state;

    const int image = blockIdx.x, groups = num_classes - 1, words = (chunk + 63) / 64;
    float4* boxes = (float4*)smem;
    u64* keys = (u64*)(boxes + chunk);
    u64* mask = keys + chunk;
    int* index = (int*)(mask + (size_t)chunk * words);
    int* first = index + chunk;
    unsigned char* overlapped = (unsigned char*)(first + num_classes);
    u64* image_best = best + (long long)image * num_priors;

    for (int p = threadIdx.x; p < num_priors; p += blockDim.x) image_best[p] = 0ull;
    if (threadIdx.x == 0) count_prefix_sums(kept_count + (long long)image * groups, groups, first);
    __syncthreads();
    const long long slot_base = (long long)image * groups * top_k;
    BelowSource source;
    source.all.keys = kept_keys + slot_base;
    source.all.first = first;
    source.all.groups = groups;
    source.all.k = top_k;
    source.best = image_best;
    source.upper = ~0ull;  // above every key
    const int items = first[groups];
    for (int i = threadIdx.x; i < items; i += blockDim.x) {  // each self-overlapping box's best candidate
        int slot = source.all.slot(i);
        float4 box = kept_boxes[slot_base + slot];
        u64 key = source.all.keys[slot];
        if (box_iou(box, box) > iou_threshold) atomicMax(&image_best[merge_key_prior(key)], key);
    }
    __syncthreads();
    const int taking_part = count_keys(source, items, &state);
    u64* out_keys = nms_keys + (long long)image * max_detections;
    float4* out_boxes = nms_boxes + (long long)image * max_detections;

    int kept = 0, taken = 0;  // the same in every thread
    while (kept < max_detections && taken < taking_part) {
        const int n = min(taking_part - taken, chunk);
        u64 cutoff = taking_part - taken > n ? radix_select(source, items, n, hist, &state) : 1ull;
        gather_keys(source, items, cutoff, keys, index, &state);
        sort_descending(keys, index, n);  // sort_length(n) <= chunk; ends with a barrier
        for (int j = threadIdx.x; j < n; j += blockDim.x) boxes[j] = kept_boxes[slot_base + index[j]];
        __syncthreads();

        for (int j = threadIdx.x; j < n; j += blockDim.x) {  // overlapped by a box kept from an earlier chunk
            float4 box = boxes[j];
            unsigned char hit = 0;
            for (int i = 0; i < kept && !hit; ++i) hit = box_iou(out_boxes[i], box) > iou_threshold;
            overlapped[j] = hit;
        }
        overlap_mask(boxes, n, words, iou_threshold, mask);  // within the chunk
        __syncthreads();

        if (threadIdx.x == 0) {  // the greedy pass itself is sequential: one thread, bit words
            state.count = kept + greedy_pass<AGNOSTIC_MAX_CHUNK / 64>(
                mask, n, words, [&](int i, int count, bool removed) {
                    if (kept + count == max_detections) return GREEDY_STOP;
                    if (overlapped[i] || removed) return GREEDY_SKIP;
                    out_keys[kept + count] = keys[i];
                    out_boxes[kept + count] = boxes[i];
                    return GREEDY_KEEP;
                });
        }
        __syncthreads();  // also makes thread 0's out_boxes visible to the block
        kept = state.count;
        source.upper = keys[n - 1];  // the chunk's worst: the next chunk lies below it
        taken += n;
        __syncthreads();  // all have read state and keys before the next chunk writes them
    }
    if (threadIdx.x == 0) det_count[image] = kept;
}

// One block per image: the records of its det_count[image] kept detections (nms_keys and
// nms_boxes, in the final order), packed right after the records of the images before it.
extern "C" __global__ void ssd_pack(const float* __restrict__ probs, const u64* __restrict__ nms_keys,
                                    const float4* __restrict__ nms_boxes, const int* __restrict__ det_count,
                                    int num_priors, int num_classes, int max_detections, float* __restrict__ packed)
{
    __shared__ int records_before;  // of the images before this one

    const int image = blockIdx.x, width = RECORD_HEAD + num_classes;
    if (threadIdx.x == 0) records_before = 0;
    __syncthreads();
    int before = 0;  // this thread's share; integer sums: exact in any order
    for (int i = threadIdx.x; i < image; i += blockDim.x) before += det_count[i];
    if (before) atomicAdd(&records_before, before);
    __syncthreads();

    const long long offset = records_before, slot_base = (long long)image * max_detections;
    const float* image_probs = probs + (long long)image * num_priors * num_classes;
    const int count = det_count[image];
    for (int r = threadIdx.x; r < count; r += blockDim.x) {
        u64 key = nms_keys[slot_base + r];
        write_record(packed + (offset + r) * width, nms_boxes[slot_base + r], key, image_probs + merge_key_prior(key),
                     num_priors, num_classes);
    }
}
