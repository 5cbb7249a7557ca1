# The netalias sidecar: CoreDNS with the netalias plugin, plus the agent CLI.
#
# No registry is needed: the static binaries are built on the host first
# (`make image` runs `make build`, CGO off) and copied into an empty image.
#
# Run one per host, on the host's network so it can listen on the bridges'
# gateway addresses and see their netlink events:
#   docker run -d --name netalias-dns --network host --cap-add NET_ADMIN \
#     -v /var/lib/netalias:/var/lib/netalias:ro \
#     -v /var/run/docker.sock:/var/run/docker.sock \
#     netalias/sidecar:latest
FROM scratch
COPY bin/coredns bin/netalias bin/netalias-full /
COPY Corefile.example /etc/coredns/Corefile
VOLUME ["/var/lib/netalias"]
EXPOSE 53/udp 53/tcp 9153/tcp
ENTRYPOINT ["/coredns"]
CMD ["-conf", "/etc/coredns/Corefile"]
