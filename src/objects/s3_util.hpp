// Helpers the embedded store's S3 operations share (s3_api.cpp, s3_bucket.cpp): header and
// query lookup, S3's date formats, ETag lists (RFC 9110 section 13.1) and XML answers.
// Private to objects/.
#pragma once

#include "objects/s3_api.hpp"

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace kiln::objects::detail {

// The first header of that (lower-case) name, compared case-insensitively.
std::optional<std::string> header(const S3Request& r, std::string_view name);
// S3 conditional writes: If-None-Match: * (create only) and If-Match: "etag". Throws Error
// (501 NotImplemented) for an If-None-Match other than *.
WriteCondition write_condition(const S3Request& r);
// The query's parameters, percent-decoded (a name without '=' maps to "").
std::map<std::string, std::string> query_map(std::string_view q);
// Milliseconds since 1970 as ISO 8601 with milliseconds ("2026-12-01T10:00:00.000Z"), and
// as an IMF-fixdate (RFC 9110 section 5.6.7).
std::string iso8601(std::int64_t ms);
std::string http_date(std::int64_t ms);
// An IMF-fixdate in seconds since 1970, or nullopt.
std::optional<std::int64_t> parse_http_date(const std::string& v);
// Whether an If-Match / If-None-Match list names this (quoted) ETag; "*" names any.
bool etag_listed(const std::string& list, const std::string& etag);

// The preconditions of a read (RFC 9110 section 13.2.2's order: If-Match,
// If-Unmodified-Since, If-None-Match, If-Modified-Since; each date one counts only when its
// ETag partner is absent). `prefix`: "" for GET/HEAD's own headers, "x-amz-copy-source-" for
// a copy's source. Dates that do not parse are ignored (as RFC 9110 says).
enum class Precondition { Holds, Failed, NotModified };
Precondition evaluate_preconditions(const S3Request& r, std::string_view prefix,
                                    const ObjectInfo& o);

inline constexpr std::string_view kXmlHead = R"(<?xml version="1.0" encoding="UTF-8"?>)";
inline constexpr std::string_view kNs = R"( xmlns="http://s3.amazonaws.com/doc/2006-03-01/")";
// An XML answer: the declaration, then `body`.
S3Response xml(int status, std::string body);
// The request headers S3 stores with an object and sends back on GET and HEAD.
inline constexpr std::string_view kStoredHeaders[] = {
    "cache-control", "content-disposition", "content-encoding", "content-language", "expires"};
// What a write stores beside the type: x-amz-meta-* headers (names lower-cased, without the
// prefix) and kStoredHeaders (under ':' + name).
std::map<std::string, std::string> user_metadata(const S3Request& r);
// An object's ETag, Last-Modified, Content-Type, Accept-Ranges and stored headers.
void object_headers(const ObjectInfo& o, S3Response& r);

}  // namespace kiln::objects::detail
