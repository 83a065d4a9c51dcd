# controller/service: the service layer (core on a strand, Ck server and sessions, routing and key
# supply, persistence, metrics) and the daemon.
add_library(qkdn_service STATIC
  ${CMAKE_CURRENT_LIST_DIR}/src/controller_facade.cpp
  ${CMAKE_CURRENT_LIST_DIR}/src/controller_service.cpp
  ${CMAKE_CURRENT_LIST_DIR}/src/core_wiring.cpp
  ${CMAKE_CURRENT_LIST_DIR}/src/epoch.cpp
  ${CMAKE_CURRENT_LIST_DIR}/src/interworking_relay.cpp
  ${CMAKE_CURRENT_LIST_DIR}/src/iwn_transfers.cpp
  ${CMAKE_CURRENT_LIST_DIR}/src/key_share.cpp
  ${CMAKE_CURRENT_LIST_DIR}/src/key_supply.cpp
  ${CMAKE_CURRENT_LIST_DIR}/src/leadership.cpp
  ${CMAKE_CURRENT_LIST_DIR}/src/persistence.cpp
  ${CMAKE_CURRENT_LIST_DIR}/src/reroute_driver.cpp
  ${CMAKE_CURRENT_LIST_DIR}/src/metrics.cpp
)
target_include_directories(qkdn_service PUBLIC ${CMAKE_CURRENT_LIST_DIR}/include)
target_link_libraries(qkdn_service PUBLIC qkdn_base qkdn_core qkdn_southbound_net
                                   PRIVATE qkdn_db qkdn_interworking prometheus-cpp::core
                                           qkdn_options)

add_executable(qkdn-controller ${CMAKE_CURRENT_LIST_DIR}/../main/main.cpp
                               ${CMAKE_CURRENT_LIST_DIR}/../main/ha_main.cpp
                               ${CMAKE_CURRENT_LIST_DIR}/../main/interworking_wiring.cpp)
target_link_libraries(qkdn-controller PRIVATE qkdn_service qkdn_northbound qkdn_db
                                              qkdn_interworking prometheus-cpp::core qkdn_options)
