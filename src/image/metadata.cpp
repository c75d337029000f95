// metadata.yaml of an LXD/Incus image, parsed with libyaml (Debian's libyaml-dev): only
// `architecture` and the flat `properties:` map are used.
#include "image/import-error.hpp"
#include "image/import-shared.hpp"

#include <yaml.h>

namespace lodge::daemon::import_detail {
namespace {

struct YamlDoc {
    yaml_parser_t parser;
    yaml_document_t doc;
    bool parser_ok = false, doc_ok = false;
    ~YamlDoc() {
        if (doc_ok)
            yaml_document_delete(&doc);
        if (parser_ok)
            yaml_parser_delete(&parser);
    }
};

std::string scalar(yaml_node_t* n) {
    return std::string(reinterpret_cast<const char*>(n->data.scalar.value), n->data.scalar.length);
}

bool valid_key_part(const std::string& k) {
    if (k.empty())
        return false;
    for (unsigned char ch : k)
        if (ch < 0x21 || ch == '=' || ch >= 0x80)
            return false;
    return true;
}

} // namespace

int parse_metadata(const std::string& text, KeyMap& keys, std::string& error) {
    YamlDoc y;
    if (!yaml_parser_initialize(&y.parser))
        return fail_errno(error, ENOMEM, "Cannot parse metadata.yaml");
    y.parser_ok = true;
    yaml_parser_set_input_string(&y.parser, reinterpret_cast<const unsigned char*>(text.data()),
                                 text.size());
    if (!yaml_parser_load(&y.parser, &y.doc))
        return fail_invalid(error, "Invalid metadata.yaml: line " +
                                       std::to_string(y.parser.problem_mark.line + 1) + ": " +
                                       (y.parser.problem ? y.parser.problem : "syntax error"));
    y.doc_ok = true;
    yaml_node_t* root = yaml_document_get_root_node(&y.doc);
    if (!root || root->type != YAML_MAPPING_NODE)
        return fail_invalid(error, "Invalid metadata.yaml: not a mapping");
    for (auto* pair = root->data.mapping.pairs.start; pair < root->data.mapping.pairs.top; pair++) {
        yaml_node_t* k = yaml_document_get_node(&y.doc, pair->key);
        yaml_node_t* v = yaml_document_get_node(&y.doc, pair->value);
        if (!k || !v || k->type != YAML_SCALAR_NODE)
            continue;
        std::string key = scalar(k);
        if (key == "architecture" && v->type == YAML_SCALAR_NODE) {
            keys["image.architecture"] = scalar(v);
        } else if (key == "properties" && v->type == YAML_MAPPING_NODE) {
            for (auto* p = v->data.mapping.pairs.start; p < v->data.mapping.pairs.top; p++) {
                yaml_node_t* pk = yaml_document_get_node(&y.doc, p->key);
                yaml_node_t* pv = yaml_document_get_node(&y.doc, p->value);
                if (!pk || !pv || pk->type != YAML_SCALAR_NODE || pv->type != YAML_SCALAR_NODE)
                    continue;
                std::string name = scalar(pk);
                if (!valid_key_part(name)) {
                    log_warning("Ignoring metadata.yaml property \"%s\": not a valid key name",
                                name.c_str());
                    continue;
                }
                keys["image." + name] = scalar(pv);
            }
        }
    }
    return 0;
}

} // namespace lodge::daemon::import_detail
