// A Redis reply as a value, and the RESP encoding/decoding around it. Decoding and command
// formatting are hiredis's (its reader and redisFormatCommandArgv): no hand-written RESP.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::redis {

struct Reply {
  enum class Type { Nil, Integer, String, Status, Error, Array };
  Type type = Type::Nil;
  long long integer = 0;
  std::string str;  // String, Status, Error
  std::vector<Reply> elements;

  [[nodiscard]] bool is_error() const { return type == Type::Error; }
  [[nodiscard]] bool is_nil() const { return type == Type::Nil; }
  // "ERR kiln: ..." replies made by the client itself (timeouts, disconnects).
  static Reply error(std::string message);
};

// One command in RESP, ready to write.
std::string format_command(const std::vector<std::string>& args);

// Incremental parser: feed bytes as they arrive, take replies as they complete.
class ReplyParser {
 public:
  ReplyParser();
  ~ReplyParser();
  ReplyParser(const ReplyParser&) = delete;
  ReplyParser& operator=(const ReplyParser&) = delete;

  void feed(const char* data, std::size_t size);
  // The next complete reply; nullopt when more bytes are needed. Throws
  // std::runtime_error on a protocol error (the connection must be dropped).
  std::optional<Reply> next();

 private:
  void* reader_;  // redisReader
};

}  // namespace kiln::redis
