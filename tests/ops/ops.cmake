# Operator-facing checks (issue 18): Prometheus rules and configuration, the dashboards, the
# topology schema, the installed files and units, and the network view in a real browser.
set(QKDN_PROM_DIR ${CMAKE_SOURCE_DIR}/dashboards/prometheus)

# promtool (Debian's prometheus package) checks both scrape configurations and their rules, and
# runs the rules' unit tests (qkdn.rules.test.yml).
add_test(NAME prometheus_config
         COMMAND promtool check config ${QKDN_PROM_DIR}/prometheus.yml
                 ${QKDN_PROM_DIR}/prometheus-https.yml)
add_test(NAME prometheus_rules COMMAND promtool test rules ${QKDN_PROM_DIR}/qkdn.rules.test.yml)
set_tests_properties(prometheus_config prometheus_rules PROPERTIES LABELS unit TIMEOUT 60)

# The dashboards against docs/metrics.md: names, labels, $__rate_interval, descriptions,
# provisioning (scripts/check-dashboards.py). Live: e2e_dashboards_live and e2e_api_tls.
add_test(NAME dashboards_check COMMAND ${QKDN_PYTHON} ${CMAKE_SOURCE_DIR}/scripts/check-dashboards.py)
set_tests_properties(dashboards_check PROPERTIES LABELS unit TIMEOUT 60)

if(TARGET qkdn-controller)
  add_test(NAME topology_schema COMMAND ${QKDN_PYTHON} ${CMAKE_CURRENT_LIST_DIR}/test_topology_schema.py)
  set_tests_properties(topology_schema PROPERTIES LABELS integration TIMEOUT 180
                       ENVIRONMENT "${QKDN_E2E_ENV}")
endif()

# cmake --install of this build tree, then the units' ExecStart lines from the installed files.
if(TARGET qkdn-controller AND TARGET qkdn-agent AND TARGET qkdnctl)
  add_test(NAME install_units COMMAND ${QKDN_PYTHON} ${CMAKE_CURRENT_LIST_DIR}/test_install.py)
  set_tests_properties(install_units PROPERTIES LABELS integration TIMEOUT 300
                       ENVIRONMENT "QKDN_BUILD_DIR=${CMAKE_BINARY_DIR};PYTHONDONTWRITEBYTECODE=1")
endif()

# The network view in headless Chromium, and every dashboard query against a live Prometheus.
if(TARGET qkdn-controller AND TARGET qkdn-agent)
  qkdn_e2e_test(e2e_network_view test_network_view.py)
  qkdn_e2e_test(e2e_dashboards_live test_dashboards_live.py)
  set_tests_properties(e2e_network_view e2e_dashboards_live PROPERTIES TIMEOUT 300)
endif()
