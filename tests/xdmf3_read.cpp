// Reads a wavecp XDMF sidecar with the Xdmf3 library (libxdmf3, the library behind ParaView's
// "Xdmf3 Reader") and prints what it sees as JSON: per step the time, point and cell counts,
// the topology type, and the arrays u, region and partition. Used by tests/output.rs; built
// there with g++ against libXdmf.so.3 when Debian's libxdmf-dev is installed.
//     xdmf3_read FILE.xdmf [K1,K2,...]   (only those steps; negative counts from the end)
#include <XdmfAttribute.hpp>
#include <XdmfDomain.hpp>
#include <XdmfGeometry.hpp>
#include <XdmfGridCollection.hpp>
#include <XdmfReader.hpp>
#include <XdmfTime.hpp>
#include <XdmfTopology.hpp>
#include <XdmfTopologyType.hpp>
#include <XdmfUnstructuredGrid.hpp>

#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>

static void print_array(const char *name, const shared_ptr<XdmfArray> &a) {
    if (!a->isInitialized()) a->read();
    std::printf("\"%s\":[", name);
    for (unsigned int i = 0; i < a->getSize(); ++i)
        std::printf(i ? ",%.17g" : "%.17g", a->getValue<double>(i));
    std::printf("]");
}

int main(int argc, char **argv) {
    if (argc != 2 && argc != 3) {
        std::fprintf(stderr, "usage: xdmf3_read FILE.xdmf [K1,K2,...]\n");
        return 2;
    }
    shared_ptr<XdmfReader> reader = XdmfReader::New();
    shared_ptr<XdmfDomain> domain = shared_dynamic_cast<XdmfDomain>(reader->read(argv[1]));
    if (!domain || domain->getNumberGridCollections() != 1) {
        std::fprintf(stderr, "expected one temporal grid collection\n");
        return 1;
    }
    shared_ptr<XdmfGridCollection> series = domain->getGridCollection(0);
    const long n = series->getNumberUnstructuredGrids();
    std::set<long> only;
    if (argc == 3)
        for (const char *p = argv[2]; *p;) {
            char *end;
            long k = std::strtol(p, &end, 10);
            only.insert(((k % n) + n) % n);
            p = *end ? end + 1 : end;
        }
    std::printf("{\"count\":%ld,\"steps\":[", n);
    bool first = true;
    for (long k = 0; k < n; ++k) {
        if (argc == 3 && !only.count(k)) continue;
        shared_ptr<XdmfUnstructuredGrid> g = series->getUnstructuredGrid(k);
        shared_ptr<XdmfTopology> topo = g->getTopology();
        shared_ptr<XdmfGeometry> geo = g->getGeometry();
        if (!topo->isInitialized()) topo->read();
        if (!geo->isInitialized()) geo->read();
        std::printf("%s{\"index\":%ld,\"time\":%.17g,\"npoints\":%u,\"ncells\":%u,\"topology\":\"%s\"",
                    first ? "" : ",", k, g->getTime() ? g->getTime()->getValue() : -1.0, geo->getNumberPoints(),
                    topo->getNumberElements(), topo->getType()->getName().c_str());
        for (const char *name : {"u", "region", "partition"}) {
            shared_ptr<XdmfAttribute> a = g->getAttribute(name);
            std::printf(",");
            if (a)
                print_array(name, a);
            else
                std::printf("\"%s\":null", name);
        }
        std::printf("}");
        first = false;
    }
    std::printf("]}\n");
    return 0;
}
