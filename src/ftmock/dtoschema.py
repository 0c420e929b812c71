"""Every field of the Candlepin DTOs ftmock answers with, and :func:`complete`, which puts them all in.

Candlepin serialises its DTOs with Jackson's default inclusion: every property of the class is in
the JSON, ``null`` where it has no value, and clients index them (subscription-manager reads
``compliantUntil``, ``releaseVer.releaseVer`` and ``idCert.serial.serial`` without looking first).
ftmock's answers therefore carry every field of the DTO the API description gives for the call.

:data:`DTOS` is generated from Candlepin's API description (``python -m tests.ftmock.test_dtoschema``
rewrites it, and the test fails when the two part ways): for each DTO, its fields in the
description's order, each mapped to the DTO it nests (``"X"``), a list of them (``"[X]"``), a map
of them (``"{X}"``, ``"{[X]}"`` for a map of lists), or ``None`` for a plain value.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DTOS", "complete"]


def complete(value: Any, dto: str) -> Any:
    """``value`` with every field of ``dto`` present (``None`` when missing), at every depth.

    Fields that are not the DTO's (ftmock's FT additions) are kept after the DTO's own.
    """
    if isinstance(value, list):
        return [complete(item, dto) for item in value]
    if not isinstance(value, dict):
        return value
    order, nested, known = _plan(dto)
    get = value.get
    out = {key: get(key) for key in order}
    for key, notation in nested:
        item = out[key]
        if item is not None:
            out[key] = _fill(item, notation)
    if not value.keys() <= known:
        for key, item in value.items():
            if key not in known:
                out[key] = item
    return out


def _fill(item: Any, nested: str) -> Any:
    """A field's value completed as its notation says: ``X``, ``[X]``, ``{X}``, ``{[X]}``."""
    if nested[0] == "[":
        return [_fill(v, nested[1:-1]) if v is not None else None for v in item] if isinstance(item, list) else item
    if nested[0] == "{":
        return {k: _fill(v, nested[1:-1]) if v is not None else None for k, v in item.items()} \
            if isinstance(item, dict) else item
    return complete(item, nested)


_PLANS: dict[str, tuple[tuple[str, ...], tuple[tuple[str, str], ...], frozenset[str]]] = {}


def _plan(dto: str) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...], frozenset[str]]:
    """A DTO's fields in order, the ones that nest DTOs with their notation, and all of them as a set
    (made once per DTO: answers of thousands of objects are completed field by field)."""
    plan = _PLANS.get(dto)
    if plan is None:
        fields = DTOS[dto]
        plan = (tuple(fields), tuple((k, v) for k, v in fields.items() if v), frozenset(fields))
        _PLANS[dto] = plan
    return plan


DTOS: dict[str, dict[str, str | None]] = {
    "ActivationKeyDTO": {
        "created": None,
        "updated": None,
        "id": None,
        "name": None,
        "description": None,
        "owner": "NestedOwnerDTO",
        "releaseVer": "ReleaseVerDTO",
        "serviceLevel": None,
        "usage": None,
        "role": None,
        "addOns": None,
        "autoAttach": None,
        "pools": "[ActivationKeyPoolDTO]",
        "products": "[ActivationKeyProductDTO]",
        "contentOverrides": "[ContentOverrideDTO]",
    },
    "ActivationKeyPoolDTO": {
        "poolId": None,
        "quantity": None,
    },
    "ActivationKeyProductDTO": {
        "productId": None,
    },
    "AsyncJobStatusDTO": {
        "created": None,
        "updated": None,
        "id": None,
        "key": None,
        "name": None,
        "group": None,
        "origin": None,
        "executor": None,
        "principal": None,
        "state": None,
        "previousState": None,
        "startTime": None,
        "endTime": None,
        "attempts": None,
        "maxAttempts": None,
        "statusPath": None,
        "resultData": None,
    },
    "AttributeDTO": {
        "name": None,
        "value": None,
    },
    "BrandingDTO": {
        "created": None,
        "updated": None,
        "productId": None,
        "name": None,
        "type": None,
    },
    "CapabilityDTO": {
        "id": None,
        "name": None,
    },
    "CertificateDTO": {
        "created": None,
        "updated": None,
        "id": None,
        "key": None,
        "cert": None,
        "serial": "CertificateSerialDTO",
    },
    "CertificateSerialDTO": {
        "created": None,
        "updated": None,
        "id": None,
        "serial": None,
        "expiration": None,
        "revoked": None,
    },
    "ComplianceReasonDTO": {
        "key": None,
        "message": None,
        "attributes": None,
    },
    "ComplianceStatusDTO": {
        "status": None,
        "compliant": None,
        "date": None,
        "compliantUntil": None,
        "compliantProducts": "{[EntitlementDTO]}",
        "partiallyCompliantProducts": "{[EntitlementDTO]}",
        "partialStacks": "{[EntitlementDTO]}",
        "nonCompliantProducts": None,
        "reasons": "[ComplianceReasonDTO]",
        "productComplianceDateRanges": "{DateRange}",
    },
    "ConsumerActivationKeyDTO": {
        "activationKeyName": None,
        "activationKeyId": None,
    },
    "ConsumerDTO": {
        "created": None,
        "updated": None,
        "id": None,
        "uuid": None,
        "name": None,
        "username": None,
        "entitlementStatus": None,
        "serviceLevel": None,
        "role": None,
        "usage": None,
        "addOns": None,
        "systemPurposeStatus": None,
        "registrationAuthenticationMethod": None,
        "releaseVer": "ReleaseVerDTO",
        "owner": "NestedOwnerDTO",
        "environment": "EnvironmentDTO",
        "entitlementCount": None,
        "facts": None,
        "lastCheckin": None,
        "installedProducts": "[ConsumerInstalledProductDTO]",
        "canActivate": None,
        "capabilities": "[CapabilityDTO]",
        "hypervisorId": "HypervisorIdDTO",
        "contentTags": None,
        "autoheal": None,
        "annotations": None,
        "contentAccessMode": None,
        "type": "ConsumerTypeDTO",
        "idCert": "CertificateDTO",
        "guestIds": "[GuestIdDTO]",
        "href": None,
        "activationKeys": "[ConsumerActivationKeyDTO]",
        "serviceType": None,
        "environments": "[EnvironmentDTO]",
        "cryptographicCapabilities": "CryptographicCapabilitiesDTO",
    },
    "ConsumerDTOArrayElement": {
        "created": None,
        "updated": None,
        "id": None,
        "uuid": None,
        "name": None,
        "username": None,
        "entitlementStatus": None,
        "serviceLevel": None,
        "role": None,
        "usage": None,
        "addOns": None,
        "systemPurposeStatus": None,
        "releaseVer": "ReleaseVerDTO",
        "owner": "NestedOwnerDTO",
        "entitlementCount": None,
        "lastCheckin": None,
        "installedProducts": "[ConsumerInstalledProductDTO]",
        "canActivate": None,
        "capabilities": "[CapabilityDTO]",
        "hypervisorId": "HypervisorIdDTO",
        "contentTags": None,
        "autoheal": None,
        "annotations": None,
        "contentAccessMode": None,
        "type": "ConsumerTypeDTO",
        "guestIds": "[GuestIdDTOArrayElement]",
        "href": None,
        "serviceType": None,
    },
    "ConsumerInstalledProductDTO": {
        "created": None,
        "updated": None,
        "id": None,
        "productId": None,
        "productName": None,
        "version": None,
        "arch": None,
        "status": None,
        "startDate": None,
        "endDate": None,
    },
    "ConsumerTypeDTO": {
        "created": None,
        "updated": None,
        "id": None,
        "label": None,
        "manifest": None,
    },
    "ConsumptionTypeCountsDTO": {
        "physical": None,
        "guest": None,
    },
    "ContentAccessDTO": {
        "contentAccessMode": None,
        "contentAccessModeList": None,
    },
    "ContentDTO": {
        "created": None,
        "updated": None,
        "uuid": None,
        "id": None,
        "type": None,
        "label": None,
        "name": None,
        "vendor": None,
        "contentUrl": None,
        "requiredTags": None,
        "releaseVer": None,
        "gpgUrl": None,
        "modifiedProductIds": None,
        "arches": None,
        "metadataExpire": None,
    },
    "ContentOverrideDTO": {
        "created": None,
        "updated": None,
        "name": None,
        "contentLabel": None,
        "value": None,
    },
    "CryptographicCapabilitiesDTO": {
        "keyAlgorithms": None,
        "signatureAlgorithms": None,
    },
    "DateRange": {
        "startDate": None,
        "endDate": None,
    },
    "DeleteResult": {
        "deletedRecords": None,
    },
    "EntitlementDTO": {
        "created": None,
        "updated": None,
        "id": None,
        "consumer": "NestedConsumerDTO",
        "pool": "PoolDTO",
        "quantity": None,
        "certificates": "[CertificateDTO]",
        "startDate": None,
        "endDate": None,
        "href": None,
    },
    "EnvironmentContentDTO": {
        "contentId": None,
        "enabled": None,
    },
    "EnvironmentDTO": {
        "created": None,
        "updated": None,
        "id": None,
        "name": None,
        "type": None,
        "description": None,
        "contentPrefix": None,
        "owner": "NestedOwnerDTO",
        "environmentContent": "[EnvironmentContentDTO]",
    },
    "GuestIdDTO": {
        "created": None,
        "updated": None,
        "id": None,
        "guestId": None,
        "attributes": None,
    },
    "GuestIdDTOArrayElement": {
        "created": None,
        "updated": None,
        "id": None,
        "guestId": None,
    },
    "HypervisorConsumerDTO": {
        "uuid": None,
        "name": None,
        "owner": "NestedOwnerDTO",
    },
    "HypervisorIdDTO": {
        "created": None,
        "updated": None,
        "id": None,
        "hypervisorId": None,
        "reporterId": None,
    },
    "HypervisorUpdateResultDTO": {
        "created": "[HypervisorConsumerDTO]",
        "updated": "[HypervisorConsumerDTO]",
        "unchanged": "[HypervisorConsumerDTO]",
        "failedUpdate": None,
    },
    "Link": {
        "rel": None,
        "href": None,
    },
    "NestedConsumerDTO": {
        "id": None,
        "uuid": None,
        "name": None,
        "href": None,
    },
    "NestedEntitlementDTO": {
        "id": None,
        "href": None,
    },
    "NestedOwnerDTO": {
        "id": None,
        "key": None,
        "displayName": None,
        "href": None,
        "contentAccessMode": None,
        "anonymous": None,
    },
    "OwnerDTO": {
        "created": None,
        "updated": None,
        "id": None,
        "displayName": None,
        "key": None,
        "contentPrefix": None,
        "defaultServiceLevel": None,
        "logLevel": None,
        "contentAccessMode": None,
        "contentAccessModeList": None,
        "autobindHypervisorDisabled": None,
        "autobindDisabled": None,
        "lastRefreshed": None,
        "parentOwner": "NestedOwnerDTO",
        "upstreamConsumer": "UpstreamConsumerDTO",
        "anonymous": None,
        "claimed": None,
        "claimantOwner": None,
    },
    "OwnerInfo": {
        "consumerCounts": None,
        "consumerGuestCounts": None,
        "entitlementsConsumedByType": None,
        "consumerTypeCountByPool": None,
        "enabledConsumerTypeCountByPool": None,
        "consumerCountsByComplianceStatus": None,
        "entitlementsConsumedByFamily": "{ConsumptionTypeCountsDTO}",
    },
    "PoolDTO": {
        "created": None,
        "updated": None,
        "id": None,
        "type": None,
        "owner": "NestedOwnerDTO",
        "activeSubscription": None,
        "sourceEntitlement": "NestedEntitlementDTO",
        "quantity": None,
        "startDate": None,
        "endDate": None,
        "attributes": "[AttributeDTO]",
        "restrictedToUsername": None,
        "contractNumber": None,
        "accountNumber": None,
        "orderNumber": None,
        "consumed": None,
        "exported": None,
        "branding": "[BrandingDTO]",
        "calculatedAttributes": None,
        "upstreamPoolId": None,
        "upstreamEntitlementId": None,
        "upstreamConsumerId": None,
        "productName": None,
        "productId": None,
        "productAttributes": "[AttributeDTO]",
        "stackId": None,
        "stacked": None,
        "sourceStackId": None,
        "href": None,
        "derivedProductAttributes": "[AttributeDTO]",
        "derivedProductId": None,
        "derivedProductName": None,
        "providedProducts": "[ProvidedProductDTO]",
        "derivedProvidedProducts": "[ProvidedProductDTO]",
        "subscriptionSubKey": None,
        "subscriptionId": None,
        "managed": None,
    },
    "PoolQuantityDTO": {
        "quantity": None,
        "pool": "PoolDTO",
    },
    "ProductContentDTO": {
        "content": "ContentDTO",
        "enabled": None,
    },
    "ProductDTO": {
        "created": None,
        "updated": None,
        "uuid": None,
        "id": None,
        "name": None,
        "multiplier": None,
        "attributes": "[AttributeDTO]",
        "productContent": "[ProductContentDTO]",
        "dependentProductIds": None,
        "branding": "[BrandingDTO]",
        "derivedProduct": "ProductDTO",
        "providedProducts": "[ProductDTO]",
        "href": None,
    },
    "ProvidedProductDTO": {
        "productId": None,
        "productName": None,
    },
    "ReleaseVerDTO": {
        "releaseVer": None,
    },
    "StatusDTO": {
        "mode": None,
        "modeReason": None,
        "modeChangeTime": None,
        "result": None,
        "version": None,
        "release": None,
        "standalone": None,
        "timeUTC": None,
        "rulesSource": None,
        "rulesVersion": None,
        "managerCapabilities": None,
        "keycloakRealm": None,
        "keycloakAuthUrl": None,
        "keycloakResource": None,
        "deviceAuthRealm": None,
        "deviceAuthUrl": None,
        "deviceAuthClientId": None,
        "deviceAuthScope": None,
    },
    "SystemPurposeAttributesDTO": {
        "owner": "NestedOwnerDTO",
        "systemPurposeAttributes": None,
    },
    "UpstreamConsumerDTO": {
        "created": None,
        "updated": None,
        "id": None,
        "uuid": None,
        "name": None,
        "apiUrl": None,
        "webUrl": None,
        "ownerId": None,
        "contentAccessMode": None,
        "type": "ConsumerTypeDTO",
        "idCert": "CertificateDTO",
    },
}
