// XML request bodies of the embedded store (CompleteMultipartUpload, DeleteObjects,
// CreateBucketConfiguration, CORSConfiguration), read by a real XML parser (Boost.PropertyTree's,
// rapidxml): a body that is not well-formed, or whose root is not the one the operation takes,
// is refused (400 MalformedXML) before anything changes; entities and character references
// (`&#x0A;`) are decoded. Private to objects/.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace kiln::objects::detail {

struct XmlElement {
  std::string name;
  std::string text;  // the element's own text, decoded
  std::vector<XmlElement> children;

  // Children named `name`, in order.
  [[nodiscard]] std::vector<const XmlElement*> all(std::string_view child) const;
  // The one child named `name`: nullptr when absent; 400 MalformedXML when repeated.
  [[nodiscard]] const XmlElement* one(std::string_view child) const;
};

// Parses `body`, whose root element must be named `root` (namespaces ignored). Throws Error
// 400 MalformedXML.
XmlElement parse_xml_body(const std::string& body, std::string_view root);

}  // namespace kiln::objects::detail
