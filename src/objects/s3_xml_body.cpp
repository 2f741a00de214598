#include "objects/s3_xml_body.hpp"

#include "objects/store.hpp"

#include <boost/property_tree/ptree.hpp>
#include <boost/property_tree/xml_parser.hpp>

#include <sstream>

namespace kiln::objects::detail {
namespace {

namespace pt = boost::property_tree;

XmlElement convert(const std::string& name, const pt::ptree& node) {
  XmlElement e{name, node.data(), {}};
  for (const auto& [child, sub] : node) {
    if (child == "<xmlattr>" || child == "<xmlcomment>") continue;  // attributes, comments
    e.children.push_back(convert(child, sub));
  }
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
