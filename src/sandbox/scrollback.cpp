#include "sandbox/scrollback.hpp"

#include <algorithm>

namespace kiln::sandbox {

Scrollback::Scrollback(std::size_t capacity) : ring_(std::max<std::size_t>(capacity, 1)) {}

std::uint64_t Scrollback::append(std::string_view bytes) {
  const std::size_t cap = ring_.size();
  end_ += bytes.size();
  if (bytes.size() >= cap) {  // only the last `cap` bytes can stay
    bytes = bytes.substr(bytes.size() - cap);
    std::copy(bytes.begin(), bytes.end(), ring_.begin());
    head_ = 0;
    size_ = cap;
    return end_;
  }
  const std::size_t first = std::min(bytes.size(), cap - head_);
  std::copy_n(bytes.begin(), first, ring_.begin() + static_cast<std::ptrdiff_t>(head_));
  std::copy(bytes.begin() + static_cast<std::ptrdiff_t>(first), bytes.end(), ring_.begin());
  head_ = (head_ + bytes.size()) % cap;
  size_ = std::min(cap, size_ + bytes.size());
  return end_;
}

std::optional<Scrollback::Read> Scrollback::read(std::uint64_t offset, std::size_t max) const {
  if (offset > end_) return std::nullopt;
  Read r;
  r.from = std::max(offset, begin());
  r.lost = r.from - offset;
  const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(end_ - r.from, max));
  r.bytes.resize(n);
  // The oldest byte held sits at (head_ - size_) mod capacity.
  const std::size_t cap = ring_.size();
  const std::size_t start =
      (head_ + cap - size_ + static_cast<std::size_t>(r.from - begin())) % cap;
  const std::size_t first = std::min(n, cap - start);
  std::copy_n(ring_.begin() + static_cast<std::ptrdiff_t>(start), first, r.bytes.begin());
  std::copy_n(ring_.begin(), n - first, r.bytes.begin() + static_cast<std::ptrdiff_t>(first));
  return r;
}

}  // namespace kiln::sandbox
