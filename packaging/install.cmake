# Install rules: binaries, systemd units, example configuration, Prometheus rules, Grafana
# dashboards and provisioning, and the documents a deployment needs. Units and configuration are
# written at install time with the prefix given to `cmake --install --prefix`, so they name the
# installed files wherever they land.
include(GNUInstallDirs)

install(TARGETS qkdn-controller qkdn-agent qkdnctl qkdn-psk-tls RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

set(QKDN_SHARE ${CMAKE_INSTALL_DATADIR}/qkdn)
install(FILES ${CMAKE_SOURCE_DIR}/dashboards/prometheus/qkdn.rules.yml
              ${CMAKE_SOURCE_DIR}/dashboards/prometheus/qkdn.rules.test.yml
              ${CMAKE_SOURCE_DIR}/dashboards/prometheus/prometheus.yml
              ${CMAKE_SOURCE_DIR}/dashboards/prometheus/prometheus-https.yml
        DESTINATION ${QKDN_SHARE}/prometheus)
install(FILES ${CMAKE_SOURCE_DIR}/dashboards/qkdn-overview.json
              ${CMAKE_SOURCE_DIR}/dashboards/qkdn-key-pools.json
        DESTINATION ${QKDN_SHARE}/grafana/dashboards)
install(FILES ${CMAKE_SOURCE_DIR}/dashboards/provisioning/datasources/qkdn.yaml
        DESTINATION ${QKDN_SHARE}/grafana/provisioning/datasources)
install(FILES ${CMAKE_SOURCE_DIR}/tests/data/topologies/tokyo-qkd.json
              ${CMAKE_SOURCE_DIR}/tests/data/topologies/germany50.json
        DESTINATION ${QKDN_SHARE}/topologies)
install(FILES ${CMAKE_SOURCE_DIR}/README.md ${CMAKE_SOURCE_DIR}/docs/topology.md
              ${CMAKE_SOURCE_DIR}/docs/topology.schema.json ${CMAKE_SOURCE_DIR}/docs/metrics.md
        DESTINATION ${CMAKE_INSTALL_DOCDIR})

# Templates filled at install time (CMAKE_INSTALL_PREFIX is then the --prefix given).
install(CODE "
  set(QKDN_PACKAGING \"${CMAKE_SOURCE_DIR}/packaging\")
  set(QKDN_DASHBOARDS \"${CMAKE_SOURCE_DIR}/dashboards\")
  set(QKDN_REL_BINDIR \"${CMAKE_INSTALL_BINDIR}\")
  set(QKDN_REL_SHARE \"${QKDN_SHARE}\")
  set(QKDN_REL_DOCDIR \"${CMAKE_INSTALL_DOCDIR}\")
  set(QKDN_REL_SYSCONFDIR \"${CMAKE_INSTALL_SYSCONFDIR}\")
")
install(SCRIPT ${CMAKE_CURRENT_LIST_DIR}/install_templates.cmake)
