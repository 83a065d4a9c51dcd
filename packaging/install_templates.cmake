# Runs at install time (install(SCRIPT) from packaging/install.cmake): writes the systemd units,
# the example configuration and the Grafana dashboard provider with the real install prefix.
# Existing configuration files are kept (an operator's edits survive a reinstall); units and
# provisioning files are replaced.
set(prefix "${CMAKE_INSTALL_PREFIX}")
set(QKDN_BINDIR "${prefix}/${QKDN_REL_BINDIR}")
set(QKDN_DOCDIR "${prefix}/${QKDN_REL_DOCDIR}")
set(QKDN_SHAREDIR "${prefix}/${QKDN_REL_SHARE}")
if(prefix STREQUAL "/usr")
  set(QKDN_SYSCONFDIR "/etc")
else()
  set(QKDN_SYSCONFDIR "${prefix}/${QKDN_REL_SYSCONFDIR}")
endif()
set(dest "$ENV{DESTDIR}")

function(qkdn_write template out keep_existing)
  if(keep_existing AND EXISTS "${dest}${out}")
    message(STATUS "Keeping: ${dest}${out}")
    return()
  endif()
  configure_file("${template}" "${dest}${out}" @ONLY)
  message(STATUS "Installing: ${dest}${out}")
endfunction()

qkdn_write("${QKDN_PACKAGING}/systemd/qkdn-controller.service.in"
           "${prefix}/lib/systemd/system/qkdn-controller.service" FALSE)
qkdn_write("${QKDN_PACKAGING}/systemd/qkdn-agent.service.in"
           "${prefix}/lib/systemd/system/qkdn-agent.service" FALSE)
qkdn_write("${QKDN_PACKAGING}/config/controller.conf.in"
           "${QKDN_SYSCONFDIR}/qkdn/controller.conf" TRUE)
qkdn_write("${QKDN_PACKAGING}/config/agent.env.in" "${QKDN_SYSCONFDIR}/qkdn/agent.env" TRUE)
if(NOT EXISTS "${dest}${QKDN_SYSCONFDIR}/qkdn/topology.json")
  file(INSTALL "${QKDN_PACKAGING}/../tests/data/topologies/tokyo-qkd.json"
       DESTINATION "${dest}${QKDN_SYSCONFDIR}/qkdn" RENAME topology.json)
endif()

# The Grafana provider, pointing at the installed dashboards.
file(READ "${QKDN_DASHBOARDS}/provisioning/dashboards/qkdn.yaml" provider)
string(REPLACE "/var/lib/grafana/dashboards/qkdn" "${QKDN_SHAREDIR}/grafana/dashboards"
       provider "${provider}")
file(WRITE "${dest}${QKDN_SHAREDIR}/grafana/provisioning/dashboards/qkdn.yaml" "${provider}")
message(STATUS "Installing: ${dest}${QKDN_SHAREDIR}/grafana/provisioning/dashboards/qkdn.yaml")
