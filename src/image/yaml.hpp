// YAML as the image code reads and writes it (libyaml): LXD's metadata.yaml, a backup's
// index.yaml and backup.yaml. Not for other users.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <yaml.h>

namespace lodge::image {

// One parsed YAML document; load() fills it and returns its root, a mapping.
class YamlDoc {
public:
    YamlDoc() = default;
    YamlDoc(const YamlDoc&) = delete;
    YamlDoc& operator=(const YamlDoc&) = delete;
    ~YamlDoc();

    // `what` names the document in errors ("Invalid metadata.yaml: line 3: ..."). 0 or -errno.
    int load(const std::string& text, const std::string& what, std::string& error);
    yaml_document_t* doc() { return &doc_; }
    yaml_node_t* root() { return yaml_document_get_root_node(&doc_); }

private:
    yaml_parser_t parser_{};
    yaml_document_t doc_{};
    bool parser_ok_ = false, doc_ok_ = false;
};

inline std::string yaml_scalar_text(const yaml_node_t* n) {
    return std::string(reinterpret_cast<const char*>(n->data.scalar.value), n->data.scalar.length);
}

// The document (a mapping at its root) as JSON, every scalar a string. A document that reuses
// nodes (aliases) is converted up to a budget of nodes and scalar bytes, counted per use.
int yaml_to_json(const std::string& text, const std::string& what, nlohmann::json& out,
                 std::string& error);

// A YAML double-quoted scalar.
std::string yaml_quoted(const std::string& value);

// `value` (objects, arrays, scalars) in YAML's block style, every key and string quoted.
std::string yaml_block(const nlohmann::json& value);

} // namespace lodge::image
