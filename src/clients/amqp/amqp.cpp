#include "clients/amqp/amqp.hpp"

#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>

#include <sys/time.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace kiln::amqp {

namespace {

constexpr amqp_channel_t kChannel = 1;

timeval to_timeval(std::chrono::milliseconds d) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(d.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((d.count() % 1000) * 1000);
  return tv;
}

amqp_bytes_t bytes(const std::string& s) {
  return amqp_bytes_t{s.size(), const_cast<char*>(s.data())};
}

std::string text(amqp_bytes_t b) {
  return {static_cast<const char*>(b.bytes), b.len};
}

// Why a synchronous method failed, from its reply.
std::string describe(const amqp_rpc_reply_t& r, const char* what) {
  std::string out = std::string(what) + ": ";
  switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
      return out + "ok";
    case AMQP_RESPONSE_NONE:
      return out + "no reply";
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
      return out + amqp_error_string2(r.library_error);
    case AMQP_RESPONSE_SERVER_EXCEPTION:
      if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
        const auto* m = static_cast<amqp_connection_close_t*>(r.reply.decoded);
        return out + "the broker closed the connection: " + std::to_string(m->reply_code) + " " +
               text(m->reply_text);
      }
      if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        const auto* m = static_cast<amqp_channel_close_t*>(r.reply.decoded);
        return out + "the broker closed the channel: " + std::to_string(m->reply_code) + " " +
               text(m->reply_text);
      }
      return out + "the broker refused it";
  }
  return out + "unknown failure";
}

// An AMQP field table over `arguments` (which must outlive it).
struct Table {
  explicit Table(const Arguments& arguments) : entries(arguments.size()) {
    for (std::size_t n = 0; n < arguments.size(); ++n) {
      const auto& [key, value] = arguments[n];
      entries[n].key = bytes(key);
      if (const auto* i = std::get_if<std::int64_t>(&value)) {
        entries[n].value.kind = AMQP_FIELD_KIND_I64;
        entries[n].value.value.i64 = *i;
      } else {
        entries[n].value.kind = AMQP_FIELD_KIND_UTF8;
        entries[n].value.value.bytes = bytes(std::get<std::string>(value));
      }
    }
  }
  amqp_table_t table() { return amqp_table_t{static_cast<int>(entries.size()), entries.data()}; }
  std::vector<amqp_table_entry_t> entries;
};

// The string-valued and integer headers of a message (others: skipped).
Arguments headers_of(const amqp_basic_properties_t& p) {
  Arguments out;
  if ((p._flags & AMQP_BASIC_HEADERS_FLAG) == 0) return out;
  for (int n = 0; n < p.headers.num_entries; ++n) {
    const auto& e = p.headers.entries[n];
    switch (e.value.kind) {
      case AMQP_FIELD_KIND_UTF8:
      case AMQP_FIELD_KIND_BYTES:
        out.emplace_back(text(e.key), text(e.value.value.bytes));
        break;
      case AMQP_FIELD_KIND_I64:
        out.emplace_back(text(e.key), e.value.value.i64);
        break;
      case AMQP_FIELD_KIND_U64:
        out.emplace_back(text(e.key), static_cast<std::int64_t>(e.value.value.u64));
        break;
      case AMQP_FIELD_KIND_I32:
        out.emplace_back(text(e.key), static_cast<std::int64_t>(e.value.value.i32));
        break;
      default:
        break;
    }
  }
  return out;
}

}  // namespace

std::string Url::redacted() const {
  // The URI spec's path is the vhost percent-encoded; no path is the default vhost "/".
  std::string path;
  if (vhost != "/") {
    path = "/";
    for (char c : vhost)
      path += c == '/' ? std::string("%2F") : c == '%' ? std::string("%25") : std::string(1, c);
  }
  return "amqp://" + user + "@" + host + ":" + std::to_string(port) + path;
}

Url parse_url(const std::string& url) {
  std::vector<char> copy(url.begin(), url.end());
  copy.push_back('\0');
  amqp_connection_info info{};
  if (url.empty() || amqp_parse_url(copy.data(), &info) != AMQP_STATUS_OK)
    throw Error("not an AMQP URL (amqp://user:password@host:port/vhost)", false);
  Url u;
  u.host = info.host;
  u.port = info.port;
  u.user = info.user;
  u.password = info.password;
  u.vhost = info.vhost;
  if (info.ssl) throw Error("amqps:// is not supported (use amqp:// inside the cluster)", false);
  return u;
}

struct Connection::Impl {
  amqp_connection_state_t conn = nullptr;
  ConnectionOptions options;
  bool confirming = false;
  std::uint64_t published = 0;  // publish sequence numbers used (confirm mode)
  std::uint64_t confirmed = 0;  // and how many of them the broker answered

  ~Impl() {
    if (conn == nullptr) return;
    // Best effort: a lost connection answers nothing, and the socket closes anyway.
    amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(conn);
  }

  void check(const char* what) {
    const auto r = amqp_get_rpc_reply(conn);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) throw Error(describe(r, what));
  }
  void status(int s, const char* what) {
    if (s != AMQP_STATUS_OK) throw Error(std::string(what) + ": " + amqp_error_string2(s));
  }
};

Connection::Connection(const ConnectionOptions& options) : impl_(std::make_unique<Impl>()) {
  auto& i = *impl_;
  i.options = options;
  i.conn = amqp_new_connection();
  if (i.conn == nullptr) throw Error("out of memory");
  amqp_socket_t* socket = amqp_tcp_socket_new(i.conn);
  if (socket == nullptr) throw Error("cannot make a socket");
  auto connect_tv = to_timeval(options.connect_timeout);
  const auto where = options.url.redacted();
  if (int s =
          amqp_socket_open_noblock(socket, options.url.host.c_str(), options.url.port, &connect_tv);
      s != AMQP_STATUS_OK)
    throw Error("cannot connect to " + where + ": " + amqp_error_string2(s));
  i.status(amqp_set_handshake_timeout(i.conn, &connect_tv), "handshake timeout");
  auto rpc_tv = to_timeval(options.rpc_timeout);
  i.status(amqp_set_rpc_timeout(i.conn, &rpc_tv), "rpc timeout");
  amqp_table_entry_t props[1];
  props[0].key = amqp_cstring_bytes("connection_name");
  props[0].value.kind = AMQP_FIELD_KIND_UTF8;
  props[0].value.value.bytes = bytes(options.name);
  amqp_table_t properties{options.name.empty() ? 0 : 1, props};
  const auto login = amqp_login_with_properties(
      i.conn, options.url.vhost.c_str(), 0, AMQP_DEFAULT_FRAME_SIZE, options.heartbeat_s,
      &properties, AMQP_SASL_METHOD_PLAIN, options.url.user.c_str(), options.url.password.c_str());
  if (login.reply_type != AMQP_RESPONSE_NORMAL)
    throw Error(describe(login, ("login to " + where + " (vhost '" + options.url.vhost + "'" +
                                 (options.url.vhost.empty()
                                      ? ": the URL ends in '/'; the vhost '/' is no path, or '/%2F'"
                                      : "") +
                                 ")")
                                    .c_str()));
  amqp_channel_open(i.conn, kChannel);
  i.check("channel.open");
}

Connection::~Connection() = default;

void Connection::declare_exchange(const std::string& name, const std::string& type) {
  amqp_exchange_declare(impl_->conn, kChannel, bytes(name), bytes(type), 0, 1, 0, 0,
                        amqp_empty_table);
  impl_->check(("exchange.declare " + name).c_str());
}

std::uint32_t Connection::declare_queue(const std::string& name, const Arguments& arguments) {
  Table table(arguments);
  const auto* ok =
      amqp_queue_declare(impl_->conn, kChannel, bytes(name), 0, 1, 0, 0, table.table());
  impl_->check(("queue.declare " + name).c_str());
  return ok != nullptr ? ok->message_count : 0;
}

void Connection::bind(const std::string& queue, const std::string& exchange,
                      const std::string& key) {
  amqp_queue_bind(impl_->conn, kChannel, bytes(queue), bytes(exchange), bytes(key),
                  amqp_empty_table);
  impl_->check(("queue.bind " + queue).c_str());
}

void Connection::qos(std::uint16_t prefetch) {
  amqp_basic_qos(impl_->conn, kChannel, 0, prefetch, 0);
  impl_->check("basic.qos");
}

void Connection::confirm_select() {
  amqp_confirm_select(impl_->conn, kChannel);
  impl_->check("confirm.select");
  impl_->confirming = true;
}

void Connection::publish(const std::string& exchange, const std::string& key,
                         const std::string& body, std::chrono::milliseconds timeout,
                         const Arguments& headers) {
  publish_all(exchange, {{key, body}}, timeout, headers);
}

void Connection::publish_all(const std::string& exchange,
                             const std::vector<std::pair<std::string, std::string>>& messages,
                             std::chrono::milliseconds timeout, const Arguments& headers) {
  auto& i = *impl_;
  Table table(headers);
  amqp_basic_properties_t props{};
  props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_CONTENT_TYPE_FLAG;
  props.delivery_mode = 2;  // persistent
  props.content_type = amqp_cstring_bytes("text/plain");
  if (!headers.empty()) {
    props._flags |= AMQP_BASIC_HEADERS_FLAG;
    props.headers = table.table();
  }
  for (const auto& [key, body] : messages) {
    i.status(amqp_basic_publish(i.conn, kChannel, bytes(exchange), bytes(key), 0, 0, &props,
                                bytes(body)),
             "basic.publish");
    ++i.published;
  }
  if (!i.confirming) return;
  // Confirms carry the channel's publish sequence numbers (1, 2, ...); `multiple` acks every
  // number up to its own.
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::uint64_t refused = 0;
  while (i.confirmed < i.published) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0)
      throw Error("no publisher confirm within " + std::to_string(timeout.count()) + " ms");
    auto tv = to_timeval(left);
    amqp_frame_t frame{};
    const int s = amqp_simple_wait_frame_noblock(i.conn, &frame, &tv);
    if (s == AMQP_STATUS_TIMEOUT) continue;
    i.status(s, "waiting for the publisher confirm");
    if (frame.frame_type != AMQP_FRAME_METHOD) continue;
    const auto id = frame.payload.method.id;
    if (id == AMQP_BASIC_ACK_METHOD || id == AMQP_BASIC_NACK_METHOD) {
      std::uint64_t tag = 0;
      bool multiple = false;
      if (id == AMQP_BASIC_ACK_METHOD) {
        const auto* m = static_cast<amqp_basic_ack_t*>(frame.payload.method.decoded);
        tag = m->delivery_tag;
        multiple = m->multiple != 0;
      } else {
        const auto* m = static_cast<amqp_basic_nack_t*>(frame.payload.method.decoded);
        tag = m->delivery_tag;
        multiple = m->multiple != 0;
        refused += multiple ? tag - i.confirmed : 1;
      }
      if (multiple || tag == i.confirmed + 1)
        i.confirmed = std::max(i.confirmed, tag);
      else
        i.confirmed += 1;  // an out-of-order single confirm: counted
    } else if (id == AMQP_CHANNEL_CLOSE_METHOD || id == AMQP_CONNECTION_CLOSE_METHOD) {
      throw Error("the broker closed the channel while publishing");
    }
  }
  amqp_maybe_release_buffers(i.conn);
  if (refused > 0)
    throw Error("the broker refused " + std::to_string(refused) + " message(s) (basic.nack)",
                false);
}

std::string Connection::consume(const std::string& queue) {
  const auto* ok = amqp_basic_consume(impl_->conn, kChannel, bytes(queue), amqp_empty_bytes, 0, 0,
                                      0, amqp_empty_table);
  impl_->check(("basic.consume " + queue).c_str());
  return ok != nullptr ? text(ok->consumer_tag) : "";
}

std::optional<Delivery> Connection::next(std::chrono::milliseconds timeout) {
  auto& i = *impl_;
  amqp_maybe_release_buffers(i.conn);
  auto tv = to_timeval(timeout);
  amqp_envelope_t env{};
  const auto r = amqp_consume_message(i.conn, &env, &tv, 0);
  if (r.reply_type == AMQP_RESPONSE_NORMAL) {
    Delivery d;
    d.tag = env.delivery_tag;
    d.exchange = text(env.exchange);
    d.routing_key = text(env.routing_key);
    d.body = text(env.message.body);
    d.redelivered = env.redelivered != 0;
    d.headers = headers_of(env.message.properties);
    amqp_destroy_envelope(&env);
    return d;
  }
  if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error == AMQP_STATUS_TIMEOUT)
    return std::nullopt;
  if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
      r.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
    // A method frame instead of a delivery: a close ends the connection, others are ignored.
    amqp_frame_t frame{};
    auto zero = to_timeval(std::chrono::milliseconds(0));
    const int s = amqp_simple_wait_frame_noblock(i.conn, &frame, &zero);
    if (s == AMQP_STATUS_TIMEOUT) return std::nullopt;
    i.status(s, "reading a frame");
    if (frame.frame_type == AMQP_FRAME_METHOD &&
        (frame.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD ||
         frame.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD))
      throw Error("the broker closed the channel");
    return std::nullopt;
  }
  throw Error(describe(r, "basic.consume"));
}

void Connection::ack(std::uint64_t tag) {
  impl_->status(amqp_basic_ack(impl_->conn, kChannel, tag, 0), "basic.ack");
}

void Connection::reject(std::uint64_t tag, bool requeue) {
  impl_->status(amqp_basic_reject(impl_->conn, kChannel, tag, requeue ? 1 : 0), "basic.reject");
}

int Connection::fd() const {
  return amqp_get_sockfd(impl_->conn);
}

bool Connection::buffered() const {
  return amqp_frames_enqueued(impl_->conn) != 0 || amqp_data_in_buffer(impl_->conn) != 0;
}

}  // namespace kiln::amqp
