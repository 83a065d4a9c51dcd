# qkdn_northbound: REST API on the shared HTTP server (base/net) (Boost.JSON, Boost.URL), /metrics, and the
# OpenAPI document (northbound/openapi.json) embedded at build time.
set(QKDN_OPENAPI_JSON ${CMAKE_CURRENT_LIST_DIR}/../openapi.json)
set(QKDN_OPENAPI_CPP ${CMAKE_CURRENT_BINARY_DIR}/openapi_embed.cpp)
add_custom_command(
  OUTPUT ${QKDN_OPENAPI_CPP}
  COMMAND ${CMAKE_COMMAND} -DINPUT=${QKDN_OPENAPI_JSON} -DOUTPUT=${QKDN_OPENAPI_CPP}
          -DSYMBOL=kOpenApiDocument -P ${CMAKE_CURRENT_LIST_DIR}/../cmake/embed_text.cmake
  DEPENDS ${QKDN_OPENAPI_JSON} ${CMAKE_CURRENT_LIST_DIR}/../cmake/embed_text.cmake
  COMMENT "Embedding northbound/openapi.json")

# The network view (northbound/ui/): compiled in, so the controller serves it with no files
# beside it and no build step at run time.
set(QKDN_UI_CPP)
foreach(ui_file index.html:kUiIndexHtml app.js:kUiAppJs style.css:kUiStyleCss)
  string(REPLACE ":" ";" ui_pair ${ui_file})
  list(GET ui_pair 0 ui_name)
  list(GET ui_pair 1 ui_symbol)
  set(ui_in ${CMAKE_CURRENT_LIST_DIR}/../ui/${ui_name})
  set(ui_out ${CMAKE_CURRENT_BINARY_DIR}/ui_${ui_symbol}.cpp)
  add_custom_command(
    OUTPUT ${ui_out}
    COMMAND ${CMAKE_COMMAND} -DINPUT=${ui_in} -DOUTPUT=${ui_out} -DSYMBOL=${ui_symbol}
            -P ${CMAKE_CURRENT_LIST_DIR}/../cmake/embed_text.cmake
    DEPENDS ${ui_in} ${CMAKE_CURRENT_LIST_DIR}/../cmake/embed_text.cmake
    COMMENT "Embedding northbound/ui/${ui_name}")
  list(APPEND QKDN_UI_CPP ${ui_out})
endforeach()

add_library(qkdn_northbound STATIC
  ${CMAKE_CURRENT_LIST_DIR}/api_server.cpp
  ${CMAKE_CURRENT_LIST_DIR}/api_util.cpp
  ${CMAKE_CURRENT_LIST_DIR}/auth.cpp
  ${CMAKE_CURRENT_LIST_DIR}/idempotency.cpp
  ${CMAKE_CURRENT_LIST_DIR}/json_model.cpp
  ${CMAKE_CURRENT_LIST_DIR}/handlers_network.cpp
  ${CMAKE_CURRENT_LIST_DIR}/handlers_routing.cpp
  ${CMAKE_CURRENT_LIST_DIR}/handlers_state.cpp
  ${CMAKE_CURRENT_LIST_DIR}/handlers_ui.cpp
  ${CMAKE_CURRENT_LIST_DIR}/handlers_interworking.cpp
  ${QKDN_OPENAPI_CPP}
  ${QKDN_UI_CPP}
)
target_include_directories(qkdn_northbound PUBLIC ${CMAKE_CURRENT_LIST_DIR}/../include)
target_link_libraries(qkdn_northbound
  PUBLIC qkdn_service qkdn_core Boost::headers OpenSSL::SSL Threads::Threads
  PRIVATE qkdn_net qkdn_json qkdn_southbound Boost::json Boost::url OpenSSL::Crypto qkdn_options)
