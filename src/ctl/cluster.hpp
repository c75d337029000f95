// lodgectl cluster: Pacemaker's view of the cluster (lodge-cluster(7)), read from
// `crm_mon --output-as=xml` on this node or, with -H, on another over ssh. lodge has no
// membership of its own: where a container runs is where Pacemaker says its resource runs.
#pragma once

#include <string>

namespace lodge::ctl {

// `lodgectl cluster status`: nodes, and every ocf:lodge:container resource with its container
// and the node(s) it runs on. Returns lodgectl's exit status.
int cluster_status(const std::string& host, bool json, bool legend);

} // namespace lodge::ctl
