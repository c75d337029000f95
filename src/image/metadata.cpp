// metadata.yaml of an LXD/Incus image, parsed with libyaml (Debian's libyaml-dev): only
// `architecture` and the flat `properties:` map are used.
#include "image/import-error.hpp"
#include "image/import-shared.hpp"
#include "image/yaml.hpp"

namespace lodge::daemon::import_detail {
namespace {

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
    image::YamlDoc y;
    if (int r = y.load(text, "metadata.yaml", error); r < 0)
        return r;
    yaml_node_t* root = y.root();
    for (auto* pair = root->data.mapping.pairs.start; pair < root->data.mapping.pairs.top; pair++) {
        yaml_node_t* k = yaml_document_get_node(y.doc(), pair->key);
        yaml_node_t* v = yaml_document_get_node(y.doc(), pair->value);
        if (!k || !v || k->type != YAML_SCALAR_NODE)
            continue;
        std::string key = image::yaml_scalar_text(k);
        if (key == "architecture" && v->type == YAML_SCALAR_NODE) {
            keys["image.architecture"] = image::yaml_scalar_text(v);
        } else if (key == "properties" && v->type == YAML_MAPPING_NODE) {
            for (auto* p = v->data.mapping.pairs.start; p < v->data.mapping.pairs.top; p++) {
                yaml_node_t* pk = yaml_document_get_node(y.doc(), p->key);
                yaml_node_t* pv = yaml_document_get_node(y.doc(), p->value);
                if (!pk || !pv || pk->type != YAML_SCALAR_NODE || pv->type != YAML_SCALAR_NODE)
                    continue;
                std::string name = image::yaml_scalar_text(pk);
                if (!valid_key_part(name)) {
                    log_warning("Ignoring metadata.yaml property \"%s\": not a valid key name",
                                name.c_str());
                    continue;
                }
                keys["image." + name] = image::yaml_scalar_text(pv);
            }
        }
    }
    return 0;
}

} // namespace lodge::daemon::import_detail
