# End-to-end tests: real controller and agent processes, driven by Python scripts.
# Debian's interpreter, which has python3-requests from scripts/install-deps.sh.
if(EXISTS /usr/bin/python3)
  set(QKDN_PYTHON /usr/bin/python3)
else()
  find_package(Python3 REQUIRED COMPONENTS Interpreter)
  set(QKDN_PYTHON ${Python3_EXECUTABLE})
endif()
set(QKDN_E2E_ENV
  "QKDN_CONTROLLER=$<TARGET_FILE:qkdn-controller>"
  "QKDN_AGENT=$<TARGET_FILE:qkdn-agent>"
  "PYTHONDONTWRITEBYTECODE=1")
function(qkdn_e2e_test name script)
  add_test(NAME ${name} COMMAND ${QKDN_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/e2e/${script})
  set_tests_properties(${name} PROPERTIES LABELS e2e ENVIRONMENT "${QKDN_E2E_ENV}" TIMEOUT 180)
endfunction()
if(TARGET qkdn-controller AND TARGET qkdn-agent)
  qkdn_e2e_test(e2e_registration test_registration.py)
endif()
if(TARGET qkdn-controller AND TARGET qkdn-agent AND TARGET qkdnctl)
  qkdn_e2e_test(e2e_cli test_cli.py)
  set_tests_properties(e2e_cli PROPERTIES ENVIRONMENT
    "${QKDN_E2E_ENV};QKDN_CTL=$<TARGET_FILE:qkdnctl>")
endif()
if(TARGET qkdn-controller AND TARGET qkdn-agent AND TARGET qkdnctl)
  qkdn_e2e_test(e2e_api_tls test_api_tls.py)
  set_tests_properties(e2e_api_tls PROPERTIES ENVIRONMENT
    "${QKDN_E2E_ENV};QKDN_CTL=$<TARGET_FILE:qkdnctl>")
endif()
# Key supply (issue 4): ETSI GS QKD 014 over mutual TLS, relays through the controller, soak.
if(TARGET qkdn-controller AND TARGET qkdn-agent)
  qkdn_e2e_test(e2e_etsi_client test_etsi_client.py)
  qkdn_e2e_test(e2e_key_supply test_key_supply.py)
  qkdn_e2e_test(e2e_soak test_soak.py)
  set_tests_properties(e2e_soak PROPERTIES TIMEOUT 300 ENVIRONMENT
    "${QKDN_E2E_ENV};QKDN_SOAK_SECONDS=60")
endif()
# Rerouting on a QBER alarm (issue 3) and qkdnctl against a relay the agents perform (issue 6).
if(TARGET qkdn-controller AND TARGET qkdn-agent)
  qkdn_e2e_test(e2e_reroute_qber test_reroute_qber.py)
endif()
if(TARGET qkdn-controller AND TARGET qkdn-agent AND TARGET qkdnctl)
  qkdn_e2e_test(e2e_cli_relay test_cli_relay.py)
  set_tests_properties(e2e_cli_relay PROPERTIES ENVIRONMENT
    "${QKDN_E2E_ENV};QKDN_CTL=$<TARGET_FILE:qkdnctl>")
endif()
# Security (issue 13): insecure modes contained, the agent's admin token, descriptor limits under
# a connection flood, ETSI 014 authorization across two agent processes.
if(TARGET qkdn-controller AND TARGET qkdn-agent)
  qkdn_e2e_test(e2e_security test_security.py)
  set_tests_properties(e2e_security PROPERTIES LABELS "e2e;security")
endif()
# Trust constraints end to end (issue 20): routes around a low-trust KM, refusals with the reason.
if(TARGET qkdn-controller AND TARGET qkdn-agent AND TARGET qkdnctl)
  qkdn_e2e_test(e2e_trust test_trust.py)
  set_tests_properties(e2e_trust PROPERTIES ENVIRONMENT
    "${QKDN_E2E_ENV};QKDN_CTL=$<TARGET_FILE:qkdnctl>")
endif()
