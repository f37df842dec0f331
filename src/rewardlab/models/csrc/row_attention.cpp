// Row attention for packed CPU training, rows in parallel: rewardlab.packed._RowAttention's loop in C++.
//
// Each row (one sequence of L real tokens) attends over its own tokens: softmax(q k^T * scale) v with
// (H, L, L) scores. The Python loop runs the rows one after another and splits every small per-row op
// over all threads; here each thread takes whole rows, so the per-row matmuls and softmaxes run on one
// thread each, with no per-op thread hand-off and no Python between them (measured on a 2-core CPU,
// MiniLM rows: attention forward + backward ~18% faster). The per-row ATen calls are the Python loop's,
// in the same order and dtype, so the results are bit-identical to it (tests check it).
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <numeric>
#include <vector>

namespace {

// The first packed row of every sequence.
std::vector<int64_t> starts_of(const std::vector<int64_t>& lengths) {
  std::vector<int64_t> starts(lengths.size(), 0);
  for (size_t r = 1; r < lengths.size(); ++r) starts[r] = starts[r - 1] + lengths[r - 1];
  return starts;
}

// Rows split into one bin per thread: longest first, each to the least-loaded bin. A row's cost grows
// with L^2 (scores) plus a fixed part (six matmul calls of ~17 us each) that equals a row of L ~ 64.
std::vector<std::vector<int64_t>> bins_of(const std::vector<int64_t>& lengths) {
  int64_t n = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), lengths.size()));
  std::vector<int64_t> order(lengths.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return lengths[a] > lengths[b]; });
  std::vector<std::vector<int64_t>> bins(n);
  std::vector<double> load(n, 0.0);
  for (int64_t r : order) {
    auto b = std::min_element(load.begin(), load.end()) - load.begin();
    bins[b].push_back(r);
    double L = static_cast<double>(lengths[r]);
    load[b] += L * L + 64.0 * L + 4096.0;
  }
  return bins;
}

// Calls row_fn(r) for every row, each bin of rows on its own thread.
template <typename F>
void for_each_row(const std::vector<int64_t>& lengths, const F& row_fn) {
  auto bins = bins_of(lengths);
  at::parallel_for(0, static_cast<int64_t>(bins.size()), 1, [&](int64_t b0, int64_t b1) {
    at::NoGradGuard no_grad;  // grad mode is thread-local: worker threads start with it on
    for (int64_t b = b0; b < b1; ++b)
      for (int64_t r : bins[b]) row_fn(r);
  });
}

// x * scale with the scale kept in float, as Python's `t.mul_(0.17)` does; `t.mul_(double)` in C++
// would round the scale to the tensor's dtype (bf16) first and change the result.
at::Tensor& scale_(at::Tensor& x, double scale) {
  return x.mul_(at::scalar_tensor(scale, at::kDouble));
}

}  // namespace

// (N, 3d) packed qkv -> [out (N, d), then q, k, v of every row] (the backward's inputs). The (H, L, L)
// probabilities are not kept: the backward computes them again, one row at a time (see there).
std::vector<at::Tensor> row_attention_forward(const at::Tensor& qkv_in, std::vector<int64_t> lengths,
                                              int64_t heads, double scale) {
  at::NoGradGuard no_grad;
  auto qkv = qkv_in.detach();
  auto out = at::empty({qkv.size(0), qkv.size(1) / 3}, qkv.options());
  auto starts = starts_of(lengths);
  std::vector<at::Tensor> saved(1 + 3 * lengths.size());
  saved[0] = out;
  for_each_row(lengths, [&](int64_t r) {
    int64_t L = lengths[r];
    // (3, H, L, dh) in one contiguous copy: every bmm below reads contiguous memory
    auto h = qkv.narrow(0, starts[r], L).view({L, 3, heads, -1}).permute({1, 2, 0, 3})
                 .clone(at::MemoryFormat::Contiguous);
    auto q = h[0], k = h[1], v = h[2];
    scale_(q, scale);  // on (H, L, dh) instead of the (H, L, L) scores
    auto p = at::_softmax(at::bmm(q, k.transpose(1, 2)), -1, false);  // (H, L, L)
    auto o = at::bmm(p, v);  // (H, L, dh)
    out.narrow(0, starts[r], L).view({L, heads, -1}).copy_(o.transpose(0, 1));
    saved[1 + 3 * r] = q;
    saved[2 + 3 * r] = k;
    saved[3 + 3 * r] = v;
  });
  return saved;
}

// grad of out (N, d) and the forward's q, k, v per row -> grad of qkv (N, 3d). Each row's p is
// computed again here by the forward's own ops (bit-identical), so only one row's (H, L, L) per thread
// lives at a time instead of every row of every layer from forward to backward: a MiniLM step at
// batch 8 keeps ~140 MB less (docs/benchmarks.md, "Memory") for one more q k^T and softmax a row.
at::Tensor row_attention_backward(const at::Tensor& grad_in, const std::vector<at::Tensor>& saved,
                                  std::vector<int64_t> lengths, int64_t heads, double scale) {
  at::NoGradGuard no_grad;
  auto grad_out = grad_in.detach();
  auto grad_qkv = at::empty({grad_out.size(0), 3 * grad_out.size(1)}, grad_out.options());
  auto starts = starts_of(lengths);
  for_each_row(lengths, [&](int64_t r) {
    int64_t L = lengths[r];
    const auto &q = saved[3 * r], &k = saved[3 * r + 1], &v = saved[3 * r + 2];
    auto p = at::_softmax(at::bmm(q, k.transpose(1, 2)), -1, false);  // (H, L, L), as the forward's
    auto d_o = grad_out.narrow(0, starts[r], L).view({L, heads, -1}).transpose(0, 1).contiguous();
    auto dv = at::bmm(p.transpose(1, 2), d_o);
    auto dp = at::bmm(d_o, v.transpose(1, 2));  // (H, L, L)
    auto ds = at::_softmax_backward_data(dp, p, -1, p.scalar_type());  // P o (dP - rowsum(dP o P))
    auto dq = at::bmm(ds, k);
    scale_(dq, scale);
    auto dk = at::bmm(ds.transpose(1, 2), q);  // q already carries the scale
    grad_qkv.narrow(0, starts[r], L).view({L, 3, heads, -1})
        .copy_(at::stack({dq, dk, dv}).permute({2, 0, 1, 3}));
  });
  return grad_qkv;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("row_attention_forward", &row_attention_forward);
  m.def("row_attention_backward", &row_attention_backward);
}
