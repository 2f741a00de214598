#include "clients/redis/reply.hpp"

#include <hiredis/hiredis.h>

#include <stdexcept>

namespace kiln::redis {
namespace {

Reply convert(const redisReply* r) {
  Reply out;
  switch (r->type) {
    case REDIS_REPLY_INTEGER:
      out.type = Reply::Type::Integer;
      out.integer = r->integer;
      break;
    case REDIS_REPLY_STRING:
      out.type = Reply::Type::String;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_STATUS:
      out.type = Reply::Type::Status;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ERROR:
      out.type = Reply::Type::Error;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ARRAY:
      out.type = Reply::Type::Array;
      out.elements.reserve(r->elements);
      for (std::size_t i = 0; i < r->elements; ++i) out.elements.push_back(convert(r->element[i]));
      break;
    default:
      out.type = Reply::Type::Nil;
  }
  return out;
}

}  // namespace

Reply Reply::error(std::string message) {
  Reply r;
  r.type = Type::Error;
  r.str = "ERR kiln: " + std::move(message);
  return r;
}

std::string format_command(const std::vector<std::string>& args) {
  std::vector<const char*> argv;
  std::vector<std::size_t> lens;
  argv.reserve(args.size());
  lens.reserve(args.size());
  for (const auto& a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  char* cmd = nullptr;
  int n = redisFormatCommandArgv(&cmd, static_cast<int>(args.size()), argv.data(), lens.data());
  if (n < 0 || cmd == nullptr) throw std::runtime_error("redisFormatCommandArgv failed");
  std::string out(cmd, static_cast<std::size_t>(n));
  redisFreeCommand(cmd);
  return out;
}

ReplyParser::ReplyParser() : reader_(redisReaderCreate()) {
  if (reader_ == nullptr) throw std::bad_alloc();
  // Replies of any size (a room's snapshot can be large); the default caps the buffer.
  static_cast<redisReader*>(reader_)->maxbuf = 0;
}

ReplyParser::~ReplyParser() {
  redisReaderFree(static_cast<redisReader*>(reader_));
}

void ReplyParser::feed(const char* data, std::size_t size) {
  if (redisReaderFeed(static_cast<redisReader*>(reader_), data, size) != REDIS_OK) {
    throw std::runtime_error("redis reader: out of memory");
  }
}

std::optional<Reply> ReplyParser::next() {
  auto* reader = static_cast<redisReader*>(reader_);
  void* raw = nullptr;
  if (redisReaderGetReply(reader, &raw) != REDIS_OK) {
    throw std::runtime_error(std::string("redis protocol error: ") + reader->errstr);
  }
  if (raw == nullptr) return std::nullopt;
  auto* r = static_cast<redisReply*>(raw);
  Reply out = convert(r);
  freeReplyObject(r);
  return out;
}

}  // namespace kiln::redis
