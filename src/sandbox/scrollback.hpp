// A terminal's output kept for reattaching (issue #20): the last `capacity` bytes of one
// stream, each byte known by its offset in the whole stream (0 for the first byte ever
// written). A client that reattaches (through any gateway) with the offset it has read up
// to gets what followed, if still held; what the ring dropped is reported, never invented.
// Pure: no I/O, not thread-safe (its owner serialises access).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::sandbox {

class Scrollback {
 public:
  // capacity: bytes held at most (> 0; a capacity of 0 is taken as 1).
  explicit Scrollback(std::size_t capacity);

  // Appends output; returns the stream's end offset after it. Bytes beyond the capacity
  // push the oldest out (a write larger than the capacity keeps its last `capacity` bytes).
  std::uint64_t append(std::string_view bytes);

  // The oldest offset held; end() when nothing is.
  [[nodiscard]] std::uint64_t begin() const { return end_ - size_; }
  // The offset after the newest byte: the total bytes ever appended.
  [[nodiscard]] std::uint64_t end() const { return end_; }
  [[nodiscard]] std::size_t capacity() const { return ring_.size(); }

  struct Read {
    std::uint64_t from = 0;  // the offset of bytes[0]
    std::string bytes;       // at most `max` bytes from `from`
    std::uint64_t lost = 0;  // bytes between the offset asked and `from` that the ring dropped
  };
  // The output from `offset` on, at most `max` bytes. An offset older than begin() reads
  // from begin() and says how much was lost; an offset past end() is nullopt (no such
  // output: the client's offset is not of this stream).
  [[nodiscard]] std::optional<Read> read(std::uint64_t offset, std::size_t max) const;

 private:
  std::vector<char> ring_;
  std::size_t head_ = 0;  // where the next byte goes
  std::size_t size_ = 0;  // bytes held
  std::uint64_t end_ = 0;
};

}  // namespace kiln::sandbox
