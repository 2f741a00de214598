#include "objects/s3_xml_body.hpp"

#include "objects/store.hpp"
#include "platform/utf8.hpp"

#include <boost/property_tree/ptree.hpp>
#include <boost/property_tree/xml_parser.hpp>

#include <sstream>

namespace kiln::objects::detail {
namespace {

namespace pt = boost::property_tree;

[[noreturn]] void malformed(const std::string& why) {
  throw Error(400, "MalformedXML",
              "The XML you provided was not well-formed or did not validate against our "
              "published schema: " +
                  why + ".");
}

// What the parser is lenient about, checked before it runs: no DTD (S3's documents have none;
// entity declarations are refused, never expanded), every '&' an entity or character
// reference XML defines, and elements nested at most kMaxDepth deep (the parser recurses).
constexpr int kMaxDepth = 32;

void prescan(const std::string& body) {
  if (body.find("<!DOCTYPE") != std::string::npos || body.find("<!ENTITY") != std::string::npos)
    malformed("a document type declaration");
  for (std::size_t at = body.find('&'); at != std::string::npos; at = body.find('&', at + 1)) {
    const auto end = body.find(';', at);
    const auto ref = body.substr(at + 1, end == std::string::npos ? 0 : end - at - 1);
    bool ok = ref == "lt" || ref == "gt" || ref == "amp" || ref == "quot" || ref == "apos";
    if (!ok && ref.size() > 1 && ref[0] == '#') {
      const bool hex = ref[1] == 'x';
      const auto digits = ref.substr(hex ? 2 : 1);
      ok = !digits.empty() && digits.size() <= 8 &&
           digits.find_first_not_of(hex ? "0123456789abcdefABCDEF" : "0123456789") ==
               std::string::npos;
    }
    if (!ok) malformed("an '&' that is no entity or character reference");
  }
  int depth = 0;
  for (std::size_t i = 0; i < body.size(); ++i) {
    if (body[i] != '<' || i + 1 >= body.size()) continue;
    const char next = body[i + 1];
    if (next == '?' || next == '!') continue;  // declarations, comments, CDATA: no nesting
    const auto close = body.find('>', i);
    if (close == std::string::npos) malformed("an unterminated tag");
    if (next == '/') {
      --depth;
    } else if (body[close - 1] != '/') {
      if (++depth > kMaxDepth) malformed("elements nested deeper than 32");
    }
    i = close;
  }
}

// Text XML 1.0 can carry: UTF-8, no control characters but tab, LF and CR (character
// references such as &#0; or &#xD800; decode to what no S3 name may hold).
void check_text(const std::string& text) {
  if (!utf8::valid(text)) malformed("text that is not UTF-8");
  for (unsigned char c : text) {
    if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') malformed("a control character");
  }
}

XmlElement convert(const std::string& name, const pt::ptree& node) {
  XmlElement e{name, node.data(), {}};
  check_text(e.text);
  for (const auto& [child, sub] : node) {
    if (child == "<xmlattr>" || child == "<xmlcomment>") continue;  // attributes, comments
    e.children.push_back(convert(child, sub));
  }
  // Mixed content (text beside child elements) is no S3 document's shape.
  if (!e.children.empty() && e.text.find_first_not_of(" \t\r\n") != std::string::npos)
    malformed("text beside child elements in " + name);
  return e;
}

}  // namespace

std::vector<const XmlElement*> XmlElement::all(std::string_view child) const {
  std::vector<const XmlElement*> out;
  for (const auto& c : children) {
    if (c.name == child) out.push_back(&c);
  }
  return out;
}

const XmlElement* XmlElement::one(std::string_view child) const {
  const auto found = all(child);
  if (found.size() > 1)
    throw Error(400, "MalformedXML", "The XML names " + std::string(child) + " more than once.");
  return found.empty() ? nullptr : found.front();
}

XmlElement parse_xml_body(const std::string& body, std::string_view root) {
  prescan(body);
  pt::ptree tree;
  try {
    std::istringstream in(body);
    pt::read_xml(in, tree, pt::xml_parser::no_comments);
  } catch (const pt::xml_parser_error& e) {
    throw Error(400, "MalformedXML",
                "The XML you provided was not well-formed or did not validate against our "
                "published schema (" +
                    e.message() + ").");
  }
  std::vector<const pt::ptree::value_type*> elements;
  for (const auto& kv : tree) {
    if (kv.first != "<xmlcomment>") elements.push_back(&kv);
  }
  if (elements.size() != 1 || elements.front()->first != root)
    throw Error(400, "MalformedXML",
                "The XML you provided was not well-formed or did not validate against our "
                "published schema: the document is one " +
                    std::string(root) + " element.");
  return convert(elements.front()->first, elements.front()->second);
}

}  // namespace kiln::objects::detail
